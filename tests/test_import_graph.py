"""The product's modules import each other without circles (module-level imports; an import inside a function is lazy)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "langrun", "webhooks")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str], *, lazy: bool = False) -> set[str]:
    """The product modules `path` imports at module level, or anywhere with `lazy` (`from a.b import c` counts a.b.c
    when that is a module)."""
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree) if lazy else tree.body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph(*, lazy: bool = False) -> dict[str, set[str]]:
    files = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        # Importing a module first imports the packages that contain it; a package does not depend on its modules by that.
        graph[name] = {m for m in _imports(path, modules, lazy=lazy) if m != name and not name.startswith(m + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_product_has_no_import_circles():
    assert _cycle(_graph()) is None


def test_the_services_do_not_import_the_tasks_even_lazily():
    graph = _graph(lazy=True)
    services = [name for name in graph if name.startswith("flows.services")]
    assert len(services) > 10
    assert not [name for name in services if "flows.tasks" in graph[name]]


def test_a_circle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
