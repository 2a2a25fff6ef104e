import json
import time

import pytest

from flows.engine import NodeError, RunContext
from flows.engine.components.core import Output, Template, Webhook, payload_schema_violations


def template(data, text):
    return Template(node_id="t", context=RunContext()).run(data=data, template=text)["text"]


def test_webhook_outputs_payload():
    assert Webhook(node_id="w", context=RunContext(payload={"a": 1})).run() == {"data": {"a": 1}}


def test_template_renders_nested_keys_and_format_specs():
    assert (
        template({"name": "Ada", "order": {"total": 3.5, "items": ["x", "y"]}}, "{name}: {order.total:.2f} {order.items.1}")
        == "Ada: 3.50 y"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("{missing}", "'missing' is missing"),
        ("{name.__class__}", "'name.__class__' is missing"),
        ("{name[0]}", "not allowed"),
        ("{0}", "'0' is missing"),
        ("{name:>99999999}", "too long"),
        ("{name", "malformed"),
        ("{name:d}", "does not fit"),
    ],
)
def test_template_refuses_unsafe_or_broken_fields(text, message):
    with pytest.raises(NodeError, match=message):
        template({"name": "Ada"}, text)


def test_template_needs_an_object():
    with pytest.raises(NodeError, match="needs an object"):
        template(["a"], "{x}")


def test_output_records_under_name_or_node_id():
    context = RunContext()
    Output(node_id="o1", context=context).run(value=1, name="total")
    Output(node_id="o2", context=context).run(value=2)
    assert context.outputs == {"total": 1, "o2": 2}


def test_webhook_schema_patterns_are_matched_within_a_time_limit():
    hostile = r"(a|aa)+$"
    schema = {
        "type": "object",
        "properties": {"s": {"type": "string", "pattern": hostile}, "ok": {"pattern": r"^\d+$"}},
        "patternProperties": {hostile: {"type": "integer"}},
    }
    victim = "a" * 40 + "!"
    started = time.monotonic()
    violations = payload_schema_violations(schema, {"s": victim, "ok": "12x", victim: 1})
    assert time.monotonic() - started < 3
    assert any(path == ["s"] and "took longer than" in msg and keyword == "pattern" for path, msg, keyword in violations)
    # Ordinary patterns behave as jsonschema's own.
    assert payload_schema_violations(schema, {"s": "aa", "ok": "12x", "aa": "x"}) == [
        (["aa"], "'x' is not of type 'integer'", "type"),
        (["ok"], "'12x' does not match '^\\\\d+$'", "pattern"),
    ]
    with pytest.raises(NodeError, match="took longer than"):
        Webhook(node_id="w", context=RunContext(payload={"s": victim})).run(schema=schema)


@pytest.mark.parametrize("spec", ["+z0100000000", ",.99999999f", "0>100000000", "*^1001", ".1001f", "x<5.5f5"])
def test_template_format_specs_are_bounded_whatever_their_form(spec):
    started = time.monotonic()
    with pytest.raises(NodeError, match="format spec"):
        template({"x": 1.5}, "{x:" + spec + "}")
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    "data, text, expected",
    [
        ({"x": 1234.5}, "{x:*^12,.1f}", "**1,234.5***"),
        ({"x": -0.0001}, "{x:z.1f}", "0.0"),
        ({"x": 7}, "{x:+08_d}|{x:#x}|{x:>4}|{x:.1%}", "+000_007|0x7|   7|700.0%"),
        ({"x": "abcdef"}, "{x:.3}|{x:=<1000.2}", "abc|ab" + "=" * 998),
        ({"x": 2, "w": 5}, "{x:{w}}", "    2"),
    ],
)
def test_template_format_specs_of_the_mini_language_still_work(data, text, expected):
    assert template(data, text) == expected


def test_template_nested_spec_is_judged_by_what_it_produces():
    with pytest.raises(NodeError, match="format spec"):
        template({"x": 2, "w": 10**9}, "{x:{w}}")


def test_template_output_stops_at_the_runs_output_limit():
    context = RunContext(max_output_bytes=100_000)
    started = time.monotonic()
    with pytest.raises(NodeError, match="larger than the limit of 100000 bytes"):
        Template(node_id="t", context=context).run(data={"x": "y"}, template="{x:1000}" * 10_000)
    assert time.monotonic() - started < 0.5


def test_webhook_schema_additional_properties_match_their_patterns_within_a_time_limit():
    schema = {"type": "object", "patternProperties": {r"(a|aa)+$": {}}, "additionalProperties": False}
    started = time.monotonic()
    violations = payload_schema_violations(schema, {"a" * 40 + "!": 1})
    assert time.monotonic() - started < 3
    assert sorted(keyword for _, _, keyword in violations) == ["additionalProperties", "patternProperties"]
    assert all("took longer than" in msg for _, msg, _ in violations)
    assert payload_schema_violations(schema, {"aa": 1}) == []
    [(path, msg, keyword)] = payload_schema_violations(schema, {"aa": 1, "b": 2})
    assert keyword == "additionalProperties" and "'b'" in msg


def test_webhook_schema_unique_items_is_checked_in_linear_time():
    # jsonschema compares unhashable items pairwise: 80,000 objects (a 1 MiB body) held a web process for hours.
    items = [{"a": i} for i in range(20_000)]
    started = time.monotonic()
    assert payload_schema_violations({"type": "array", "uniqueItems": True}, items) == []
    assert time.monotonic() - started < 3
    [(path, msg, keyword)] = payload_schema_violations({"uniqueItems": True}, [*items, {"a": 7}])
    assert path == [] and keyword == "uniqueItems" and "non-unique" in msg


@pytest.mark.parametrize(
    "items, unique",
    [
        ([1, 1.0], False),
        ([1, True], True),
        ([0, False], True),
        ([[1, {"a": [True]}], [1, {"a": [True]}]], False),
        ([{"a": 1, "b": 2}, {"b": 2, "a": 1}], False),
        ([{"a": 1}, {"a": 1, "b": None}], True),
        (["1", 1, None, [], {}], True),
        ([[1, 2], [2, 1]], True),
    ],
)
def test_webhook_schema_unique_items_compares_as_json_schema_does(items, unique):
    assert (payload_schema_violations({"uniqueItems": True}, items) == []) is unique


def test_webhook_schema_violations_are_bounded_in_number_and_length():
    # Each message may repeat the value it is about (the whole array, for uniqueItems), and every item may break the
    # schema: the 422 for a 1 MiB body was many times its size.
    schema = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    violations = payload_schema_violations(schema, [*range(5_000), 1])
    assert 0 < len(violations) <= 50
    assert all(len(msg) <= 300 for _, msg, _ in violations)
    [(path, msg, keyword)] = payload_schema_violations({"uniqueItems": True}, [*range(5_000), 1])
    assert keyword == "uniqueItems" and msg.endswith("has non-unique elements") and len(msg) <= 300


def test_webhook_schema_check_stops_at_its_time_limit(monkeypatch):
    # Each level tries both branches, both fail: 2**depth descents (depth 30: years of a web process).
    schema = {"$defs": {"n": {"type": "array", "items": {"anyOf": [{"$ref": "#/$defs/n"}, {"$ref": "#/$defs/n"}]}}}, "$ref": "#/$defs/n"}
    from flows.engine.components import core

    monkeypatch.setattr(core, "SCHEMA_TIMEOUT", 0.5)
    started = time.monotonic()
    [(path, msg, keyword)] = payload_schema_violations(schema, json.loads("[" * 30 + '"x"' + "]" * 30))
    assert time.monotonic() - started < 3
    assert path == [] and "took longer than" in msg and keyword == "timeout"


def test_a_schema_that_refers_to_itself_without_end_fails_its_node_only():
    with pytest.raises(NodeError, match="refers to itself without end"):
        Webhook(node_id="w", context=RunContext(payload={"a": 1})).run(schema={"not": {"$ref": "#"}})
