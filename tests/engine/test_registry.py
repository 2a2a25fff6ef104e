import asyncio

import pytest

from flows.engine import Component, Input, Output, registry
from flows.engine.registry import Registry


def test_builtin_components_are_registered():
    assert {"Webhook", "Template", "Output"} <= set(registry.names())


def test_catalogue_describes_ports():
    template = next(c for c in registry.catalogue() if c["name"] == "Template")
    assert [i["name"] for i in template["inputs"]] == ["data", "template"]
    assert template["outputs"] == [{"name": "text", "type": "str", "description": "The rendered text."}]


def test_registry_refuses_component_without_run():
    class NoRun(Component):
        """Has no run()."""

        name = "NoRun"

    with pytest.raises(TypeError, match="does not implement run"):
        Registry().register(NoRun)


def test_registry_accepts_an_async_run_and_the_runners_await_it():
    from flows.engine import parse_graph, run_graph

    class Later(Component):
        """Answers after giving the loop a turn."""

        name = "Later"
        outputs = (Output("x"),)

        async def run(self):
            await asyncio.sleep(0)
            return {"x": 1}

    local = Registry()
    local.register(Later)
    local.register(registry.get("Output"))
    graph = parse_graph(
        {"nodes": [{"id": "l", "type": "Later"}, {"id": "o", "type": "Output"}], "edges": [{"source": "l", "target": "o"}]}, registry=local
    )
    assert run_graph(graph, registry=local).outputs == {"o": 1}


def test_registry_refuses_duplicate_names_and_bad_types():
    local = Registry()

    class A(Component):
        """A."""

        name = "Same"

        def run(self):
            return {}

    class B(A):
        """B."""

        inputs = (Input("x", "float"),)
        outputs = (Output("y"), Output("y"))

    local.register(A)
    with pytest.raises(TypeError) as exc:
        local.register(B)
    message = str(exc.value)
    assert "taken" in message and "unknown type 'float'" in message and "duplicate output names" in message


def test_registry_refuses_undocumented_component():
    class Quiet(Component):
        name = "Quiet"

        def run(self):
            return {}

    with pytest.raises(TypeError, match="no docstring"):
        Registry().register(Quiet)


def test_only_components_that_never_wait_are_quick():
    builtin = {name: registry.get(name).quick for name in registry.names() if registry.get(name).__module__.startswith("flows.")}
    assert {name for name, quick in builtin.items() if not quick} == {"HTTPRequest", "LanguageModel"}

    class Custom(Component):
        """A component of an operator's module: not quick unless it says so."""

        name = "Custom"
        outputs = (Output("x"),)

        def run(self):
            return {"x": 1}

    local = Registry()
    local.register(Custom)
    local.register(registry.get("Template"))
    assert local.all_quick(["Template"]) is True
    assert local.all_quick(["Template", "Custom"]) is False
    assert local.all_quick(["Template", "Unknown"]) is False
    assert local.all_quick([]) is False
