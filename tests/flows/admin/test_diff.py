"""flows.admin.diff: a unified diff of two graphs, difflib's own for small ones, found block by block for large ones."""

import copy
import difflib
import json
import random
import re

import pytest

from flows.admin import diff
from flows.admin.diff import json_diff


def graph(n: int, changed_every: int | None = None) -> dict:
    nodes = [{"id": "hook", "type": "Webhook"}]
    nodes += [{"id": f"n{i}", "type": "Template", "params": {"template": f"Hello {{name}} {i}"}} for i in range(n)]
    edges = [{"source": "hook", "target": "n0", "target_input": "data"}] if n else []
    edges += [{"source": f"n{i}", "target": f"n{i + 1}", "target_input": "data"} for i in range(n - 1)]
    if changed_every:
        for i in range(0, n, changed_every):
            nodes[i + 1]["params"]["template"] = f"changed {i}"
    return {"nodes": nodes, "edges": edges}


def pretty(value) -> list[str]:
    return json.dumps(value, indent=2, sort_keys=True).splitlines()


def patched(old: list[str], unified: list[str]) -> list[str]:
    """`old` with the unified diff applied, checking that every hunk's context and removed lines are where it says."""
    assert unified[:2] == ["--- v1", "+++ v2"]
    out, at, lines = [], 0, unified[2:]
    k = 0
    while k < len(lines):
        m = re.fullmatch(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", lines[k])
        assert m, lines[k]
        start, length = int(m[1]), int(m[2] if m[2] is not None else 1)
        start = start - 1 if length else start
        out += old[at:start]
        at, k = start, k + 1
        while k < len(lines) and not lines[k].startswith("@@"):
            sign, text = lines[k][0], lines[k][1:]
            if sign in " -":
                assert old[at] == text
                at += 1
            if sign in " +":
                out.append(text)
            k += 1
    return out + old[at:]


def edited(rng: random.Random) -> tuple[dict, dict]:
    old = graph(rng.randint(0, 15))
    new = copy.deepcopy(old)
    for _ in range(rng.randint(0, 5)):
        what = rng.choice(["param", "add", "remove", "edge", "setting", "nested"])
        if what == "param" and new["nodes"]:
            rng.choice(new["nodes"]).setdefault("params", {})["template"] = str(rng.random())
        elif what == "add":
            new["nodes"].insert(rng.randint(0, len(new["nodes"])), {"id": f"x{rng.random()}", "type": "Text"})
        elif what == "remove" and new["nodes"]:
            new["nodes"].pop(rng.randrange(len(new["nodes"])))
        elif what == "edge" and new["edges"]:
            new["edges"].pop(rng.randrange(len(new["edges"])))
        elif what == "setting":
            new["timeout"] = 5
        elif what == "nested" and new["nodes"]:
            rng.choice(new["nodes"])["params"] = {"body": {"a": [1, {"b": rng.random()}]}}
    return old, new


def test_a_small_graphs_diff_is_difflibs():
    rng = random.Random(7)
    for _ in range(200):
        old, new = edited(rng)
        expected = list(difflib.unified_diff(pretty(old), pretty(new), "v1", "v2", lineterm=""))
        assert list(json_diff(old, new, "v1", "v2")) == expected


def test_a_large_graphs_diff_found_block_by_block_turns_one_into_the_other(monkeypatch):
    monkeypatch.setattr(diff, "SMALL", 0)  # every graph takes the block-by-block path
    rng = random.Random(11)
    for _ in range(300):
        old, new = edited(rng)
        unified = list(json_diff(old, new, "v1", "v2"))
        if old == new:
            assert unified == []
        else:
            assert patched(pretty(old), unified) == pretty(new)


@pytest.mark.parametrize("limit", [0, 2000])
def test_blocks_that_do_not_pair_one_for_one_are_removed_and_added_whole_past_the_limit(monkeypatch, limit):
    monkeypatch.setattr(diff, "SMALL", 0)
    monkeypatch.setattr(diff, "LINE_MATCH_LIMIT", limit)
    old, new = graph(6), graph(6)
    new["nodes"][2:5] = [{"id": "only", "type": "Text"}]
    unified = list(json_diff(old, new, "v1", "v2"))
    assert patched(pretty(old), unified) == pretty(new)


def test_every_node_of_a_large_graph_changed_is_each_shown_as_its_own_line_changed():
    old, new = graph(3000), graph(3000, changed_every=1)
    unified = list(json_diff(old, new, "v1", "v2"))
    removed = [line for line in unified if line.startswith("-") and "Hello {name}" in line]
    added = [line for line in unified if line.startswith("+") and '"changed ' in line]
    assert len(removed) == len(added) == 3000
    assert sum(line[:1] in "-+" for line in unified[2:]) == 6000  # nothing else is shown as changed
    assert patched(pretty(old), unified) == pretty(new)


def test_equal_graphs_and_a_first_version():
    assert list(json_diff(graph(3), graph(3), "v1", "v2")) == []
    first = list(json_diff(None, graph(1), "(nothing)", "v1"))
    assert first[:3] == ["--- (nothing)", "+++ v1", f"@@ -0,0 +1,{len(pretty(graph(1)))} @@"]
