"""A unified diff of two graphs as pretty JSON, in time that grows with the graphs' size, not its square.

difflib's matcher slows down quadratically when many lines differ: a 7,000-node flow whose every node changed took
35 s to compare, in the web process. Graphs of up to SMALL lines are compared by difflib itself. Larger ones have
their lines grouped into blocks first, an element of the graph's top-level lists (a node, an edge) each, and the
blocks are matched; only the lines of blocks that replace others one for one (a node changed in place) are matched
line by line. The output is difflib's unified format either way.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from typing import Any

# Lines (of both graphs together) that difflib compares as they are, in well under a second whatever changed.
SMALL = 4000
# Lines of a run of unmatched blocks (not one for one) compared line by line at most; past it they are shown as
# removed and added whole.
LINE_MATCH_LIMIT = 2000


def json_diff(old: Any, new: Any, old_name: str, new_name: str, *, context: int = 3) -> Iterator[str]:
    """The unified diff of `old` and `new` written as JSON (`indent=2`, sorted keys); nothing when they are equal."""
    a, b = _pretty(old), _pretty(new)
    opcodes = _opcodes(a, b) if len(a) + len(b) > SMALL else difflib.SequenceMatcher(None, a, b).get_opcodes()
    if all(tag == "equal" for tag, *_ in opcodes):
        return
    yield f"--- {old_name}"
    yield f"+++ {new_name}"
    for group in _Opcodes(opcodes).get_grouped_opcodes(context):
        first, last = group[0], group[-1]
        yield f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@"
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                yield from (" " + line for line in a[i1:i2])
                continue
            yield from ("-" + line for line in a[i1:i2])
            yield from ("+" + line for line in b[j1:j2])


def _pretty(value: Any) -> list[str]:
    return json.dumps(value, indent=2, sort_keys=True).splitlines() if value is not None else []


def _blocks(lines: list[str]) -> list[tuple[str, ...]]:
    """The lines in blocks: each element of a top-level list (its lines indented by 4, to its closing line), and
    every other line alone."""
    blocks: list[list[str]] = []
    inside = False
    for line in lines:
        indent = len(line) - len(line.lstrip(" "))
        if inside and (indent > 4 or (indent == 4 and line.lstrip()[:1] in "]}")):
            blocks[-1].append(line)
            inside = indent > 4
            continue
        blocks.append([line])
        inside = indent == 4 and line.rstrip().endswith(("{", "["))
    return [tuple(block) for block in blocks]


def _opcodes(a: list[str], b: list[str]) -> list[tuple[str, int, int, int, int]]:
    """difflib's opcodes of the lines `a` and `b`, found block by block."""
    blocks_a, blocks_b = _blocks(a), _blocks(b)
    starts_a, starts_b = _starts(blocks_a), _starts(blocks_b)
    opcodes: list[tuple[str, int, int, int, int]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, blocks_a, blocks_b, autojunk=False).get_opcodes():
        lines = (starts_a[i1], starts_a[i2], starts_b[j1], starts_b[j2])
        if tag == "replace" and i2 - i1 == j2 - j1:  # blocks changed in place: each compared with its own
            for k in range(i2 - i1):
                _lines_opcodes(a, b, starts_a[i1 + k], starts_a[i1 + k + 1], starts_b[j1 + k], starts_b[j1 + k + 1], opcodes)
        elif tag == "replace" and (lines[1] - lines[0]) + (lines[3] - lines[2]) <= LINE_MATCH_LIMIT:
            _lines_opcodes(a, b, *lines, opcodes)
        else:
            _add(opcodes, tag, *lines)
    return opcodes or [("equal", 0, 0, 0, 0)]


def _starts(blocks: list[tuple[str, ...]]) -> list[int]:
    """The line number each block starts at, and the number of lines last."""
    starts = [0]
    for block in blocks:
        starts.append(starts[-1] + len(block))
    return starts


def _lines_opcodes(a: list[str], b: list[str], i1: int, i2: int, j1: int, j2: int, opcodes: list) -> None:
    for tag, x1, x2, y1, y2 in difflib.SequenceMatcher(None, a[i1:i2], b[j1:j2], autojunk=False).get_opcodes():
        _add(opcodes, tag, i1 + x1, i1 + x2, j1 + y1, j1 + y2)


def _add(opcodes: list, tag: str, i1: int, i2: int, j1: int, j2: int) -> None:
    """Append an opcode, merged with the last one when both are equal runs or both are changes."""
    if i1 == i2 and j1 == j2:
        return
    tag = "equal" if tag == "equal" else "replace"
    if opcodes and (opcodes[-1][0] == "equal") == (tag == "equal"):
        previous = opcodes.pop()
        i1, j1 = previous[1], previous[3]
    if tag != "equal":  # difflib's names, which get_grouped_opcodes and the format above read
        tag = "replace" if i1 < i2 and j1 < j2 else "delete" if i1 < i2 else "insert"
    opcodes.append((tag, i1, i2, j1, j2))


class _Opcodes(difflib.SequenceMatcher):
    """difflib's grouping into hunks, of opcodes found elsewhere."""

    def __init__(self, opcodes: list[tuple[str, int, int, int, int]]):
        super().__init__(None, [], [])
        self._found = opcodes

    def get_opcodes(self):
        return self._found


def _range(start: int, stop: int) -> str:
    """A hunk's line range in the unified format (as difflib writes it)."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"
