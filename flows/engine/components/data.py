"""Components that reshape data: constant text, JMESPath extraction, routing, building objects, joining text."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.visitor
import regex

from flows.engine.errors import NodeError
from flows.engine.limits import InlineBudget, OutputTooLarge, check_output_size, leave_loop_if_inline
from flows.engine.registry import Component, Input, Output, register

MAX_REGEX = 500
# Seconds one regular expression may take on one text (less when the run has less time left). Matching
# is linear for ordinary patterns; a pattern that backtracks exponentially fails its node instead of
# holding the worker, and it stays short because the runs of quick flows share a worker task.
REGEX_TIMEOUT = 1.0


def regex_search(pattern: str, text: str, *, ignore_case: bool = False, context: Any = None) -> bool:
    """Whether `pattern` matches somewhere in `text`, within REGEX_TIMEOUT and the run's remaining time.

    Patterns are checked with Python's `re` when a flow is saved; the `regex` package matches them here
    (its default syntax is `re`'s) because it can stop a match that runs too long, and it lets other
    threads run meanwhile (a synchronous run executes in a web worker's thread).
    """
    remaining = context.remaining() if context is not None and hasattr(context, "remaining") else None
    limit = REGEX_TIMEOUT if remaining is None else min(REGEX_TIMEOUT, remaining)
    flags = regex.IGNORECASE if ignore_case else 0
    try:
        try:
            return regex.search(pattern, text, flags, timeout=min(_REGEX_INLINE, limit), concurrent=True) is not None
        except TimeoutError:
            leave_loop_if_inline()  # other runs share the event loop: the runner finishes this in a thread
            found = _search_in_thread(pattern, text, flags, limit)
    except TimeoutError:
        raise NodeError(
            f"The regular expression {pattern[:100]!r} took longer than {limit:.2g} s on a text of {len(text)} characters: "
            "it backtracks too much (nested or overlapping repetitions such as (a|aa)+ or (a+)+)."
        ) from None
    except regex.error as exc:
        raise NodeError(f"Not a valid regular expression {pattern[:100]!r}: {exc}") from exc
    return found


# The `regex` package's timeout counts the process's CPU time: in a worker that gets little of the CPU
# (niced, on a busy machine) a second of it can take many. A match that needs more than a moment is
# therefore given to a thread and waited for by the clock; left behind, it still stops at its own timeout.
_REGEX_INLINE = 0.01


def _search_in_thread(pattern: str, text: str, flags: int, limit: float) -> bool:
    outcome: list = []

    def search() -> None:
        try:
            outcome.append(regex.search(pattern, text, flags, timeout=limit, concurrent=True) is not None)
        except BaseException as exc:  # handed to the waiting thread
            outcome.append(exc)

    thread = threading.Thread(target=search, name="regex-search", daemon=True)
    thread.start()
    thread.join(limit)
    if not outcome:
        raise TimeoutError
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _compile_jmespath(query: str):
    try:
        return jmespath.compile(query)
    except jmespath.exceptions.JMESPathError as exc:
        raise ValueError(str(exc).replace("\n", " ")) from exc
    except RecursionError:  # the parser recurses once per level of nesting
        raise ValueError("the expression is nested too deeply") from None


def _search(query: str, data: Any, context: Any) -> Any:
    try:
        parsed = _compile_jmespath(query)
        interpreter = _BoundedInterpreter(limit=getattr(context, "max_output_bytes", None), deadline=getattr(context, "deadline", None))
        return interpreter.visit(parsed.parsed, data)
    except (ValueError, jmespath.exceptions.JMESPathError) as exc:
        raise NodeError(f"JMESPath query {query!r} failed: {exc}") from exc


def search_bounded(parsed: Any, data: Any, *, limit: int | None, deadline: float | None) -> Any:
    """A compiled JMESPath expression (`jmespath.compile`'s result) applied to `data` under the bounds of a run's
    Extract: NodeError as soon as a value it builds passes `limit` bytes, or at `deadline` (time.monotonic())."""
    return _BoundedInterpreter(limit=limit, deadline=deadline).visit(parsed.parsed, data)


class _BoundedFunctions(jmespath.functions.Functions):
    def __init__(self, limit: int | None):
        self.limit = limit

    @jmespath.functions.signature({"types": ["string"]}, {"types": ["array-string"]})
    def _func_join(self, separator, array):
        # The separator is repeated: a short list and a long separator (each within the limit) multiply.
        if self.limit is not None and len(separator) * (len(array) - 1) > self.limit:
            raise OutputTooLarge(self.limit, "A JMESPath result")
        return separator.join(array)


# Expressions that build new values, possibly larger than what they read (`[@, @]` doubles its input).
_BUILDING = frozenset(
    ("multi_select_list", "multi_select_dict", "flatten", "projection", "value_projection", "filter_projection", "function_expression")
)


class _BoundedInterpreter(jmespath.visitor.TreeInterpreter):
    """JMESPath's interpreter, stopped as soon as a value it builds passes the run's output limit or the run's time is up.

    Each built value is measured (shared parts once, see limits.json_size), so a query whose result
    doubles per step fails at the step that passes the limit instead of writing out gigabytes.
    """

    def __init__(self, *, limit: int | None, deadline: float | None):
        super().__init__(jmespath.Options(custom_functions=_BoundedFunctions(limit)))
        self._limit, self._deadline = limit, deadline
        self._budget = InlineBudget()  # a long query leaves the event loop other runs share

    def visit(self, node, *args, **kwargs):
        self._budget.check()
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise NodeError("The JMESPath query was still running at the run's time limit.")
        result = super().visit(node, *args, **kwargs)
        if self._limit is not None and node["type"] in _BUILDING and isinstance(result, list | dict | str):
            check_output_size(result, limit=self._limit, what="A JMESPath result")
        return result


def _check_query(params: dict[str, Any], name: str) -> list[tuple[str, str, str]]:
    query = params.get(name)
    if isinstance(query, str) and query:
        try:
            _compile_jmespath(query)
        except ValueError as exc:
            return [(name, f"Not a valid JMESPath expression: {exc}", "jmespath")]
    return []


def as_text(value: Any) -> str:
    """Text as is; anything else as compact JSON (so numbers, lists and objects read naturally)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


@register
class Text(Component):
    """A fixed piece of text, or text passed through from an edge.

    Imported Langflow Chat Input / Text Input nodes become this component.
    """

    name = "Text"
    quick = True
    description = "Gives a fixed text (or the text reaching it)."
    inputs = (Input("text", "str", required=False, default="", description="The text."),)
    outputs = (Output("text", "str", "The text."),)

    def run(self, *, text: str = "") -> dict[str, Any]:
        return {"text": as_text(text if text is not None else "")}


@register
class Extract(Component):
    """Picks a value out of its input with a JMESPath query, e.g. `customer.name` or `items[?qty > `1`].sku`.

    A query that matches nothing gives null; an invalid query is refused when the flow is saved.
    """

    name = "Extract"
    quick = True
    description = "Selects part of the input with a JMESPath query."
    inputs = (
        Input("data", "any", description="The value to query."),
        Input("query", "str", description="A JMESPath expression, e.g. customer.name.", connectable=False),
    )
    outputs = (Output("value", "any", "What the query selected (null when nothing matched)."),)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str, str]]:
        return _check_query(params, "query")

    def run(self, *, data: Any, query: str) -> dict[str, Any]:
        return {"value": _search(query, data, self.context)}


OPERATORS = ("equals", "not_equals", "contains", "starts_with", "ends_with", "matches", "gt", "lt", "ge", "le", "is_empty", "is_not_empty")


def _number(value: Any) -> int | float | None:
    """A number as it is, numeric text as an int (else a float); Python compares ints and floats exactly, so an
    integer past a float's range (a JSON number may have hundreds of digits) is compared, never converted."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


@register
class Condition(Component):
    """If-Else router: compares its input (or a JMESPath `path` into it) with `value`.

    The input is passed on through exactly one of the outputs `true` and `false`; nodes fed only
    by the other one are skipped. Text comparisons honour `case_sensitive`; `gt`/`lt`/`ge`/`le`
    compare numbers (numeric text counts as a number). `matches` searches with a regular expression
    (Python's syntax); one still matching after REGEX_TIMEOUT seconds fails the node.
    """

    name = "Condition"
    quick = True
    description = "Routes its input to the `true` or `false` output by comparing it with a value."
    inputs = (
        Input("data", "any", description="The value to test; passed on through the chosen output."),
        Input("path", "str", required=False, description="JMESPath into the input selecting what to compare.", connectable=False),
        Input("operator", "str", default="equals", choices=OPERATORS, description="How to compare.", connectable=False),
        Input("value", "any", required=False, description="What to compare with (not used by is_empty/is_not_empty).", connectable=False),
        Input("case_sensitive", "bool", default=True, description="Whether text comparisons respect case.", connectable=False),
    )
    outputs = (
        Output("true", "any", "The input, when the comparison holds."),
        Output("false", "any", "The input, when it does not."),
    )

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str, str]]:
        problems = _check_query(params, "path")
        if params.get("operator") == "matches":
            pattern = params.get("value")
            if not isinstance(pattern, str):
                problems.append(("value", "The matches operator needs a regular expression as value.", "regex"))
            elif len(pattern) > MAX_REGEX:
                problems.append(("value", f"The regular expression is longer than {MAX_REGEX} characters.", "regex"))
            else:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    problems.append(("value", f"Not a valid regular expression: {exc}", "regex"))
        return problems

    def run(
        self, *, data: Any, operator: str = "equals", path: str | None = None, value: Any = None, case_sensitive: bool = True
    ) -> dict[str, Any]:
        subject = _search(path, data, self.context) if path else data
        if operator == "matches":
            holds = regex_search(as_text(value), as_text(subject), ignore_case=not case_sensitive, context=self.context)
        else:
            holds = self._holds(subject, operator, value, case_sensitive)
        branch = "true" if holds else "false"
        return {branch: data}

    @staticmethod
    def _holds(subject: Any, operator: str, value: Any, case_sensitive: bool) -> bool:
        if operator == "is_empty":
            return subject is None or (
                isinstance(subject, str | list | dict) and len(subject.strip() if isinstance(subject, str) else subject) == 0
            )
        if operator == "is_not_empty":
            return not Condition._holds(subject, "is_empty", value, case_sensitive)
        if operator in ("gt", "lt", "ge", "le"):
            a, b = _number(subject), _number(value)
            if a is None or b is None:
                raise NodeError(f"Condition {operator} compares numbers, got {as_text(subject)[:100]!r} and {as_text(value)[:100]!r}.")
            return {"gt": a > b, "lt": a < b, "ge": a >= b, "le": a <= b}[operator]
        if operator in ("equals", "not_equals"):
            if isinstance(subject, str) or isinstance(value, str):
                same = _fold(as_text(subject), case_sensitive) == _fold(as_text(value), case_sensitive)
            else:
                same = subject == value
            return same if operator == "equals" else not same
        if operator == "contains" and isinstance(subject, list):
            return any(_fold(as_text(item), case_sensitive) == _fold(as_text(value), case_sensitive) for item in subject)
        text, other = _fold(as_text(subject), case_sensitive), as_text(value)
        other = _fold(other, case_sensitive)
        if operator == "contains":
            return other in text
        if operator == "starts_with":
            return text.startswith(other)
        if operator == "ends_with":
            return text.endswith(other)
        raise NodeError(f"Unknown operator {operator!r}.")


def _fold(text: str, case_sensitive: bool) -> str:
    return text if case_sensitive else text.casefold()


@register
class JSONBuild(Component):
    """Builds an object from its named inputs (edges or params of any identifier name), e.g. a request body.

    `base` gives fixed keys; named inputs override them.
    """

    name = "JSONBuild"
    quick = True
    description = "Builds an object from named inputs."
    inputs = (Input("base", "object", required=False, description="Fixed keys of the object.", connectable=False),)
    outputs = (Output("data", "object", "The object."),)
    extra_inputs = Input("*", "any", required=False, description="A key of the object, with its value.")

    def run(self, *, base: dict | None = None, **named: Any) -> dict[str, Any]:
        return {"data": {**(base or {}), **named}}


@register
class TextJoin(Component):
    """Joins texts with a separator; takes several edges into `texts`, in edge order.

    Values that are not text are written as JSON; nulls (from an unchosen branch) are left out.
    """

    name = "TextJoin"
    quick = True
    description = "Joins several texts with a separator."
    inputs = (
        Input("texts", "any", multiple=True, description="The texts to join (one edge each, in edge order)."),
        Input("separator", "str", default="\n", description="Put between the texts.", connectable=False),
    )
    outputs = (Output("text", "str", "The joined text."),)

    def run(self, *, texts: list[Any], separator: str = "\n") -> dict[str, Any]:
        if not isinstance(texts, list):
            raise NodeError(f"TextJoin needs a list of texts, got {as_text(texts)[:100]!r}.")
        return {"text": separator.join(as_text(t) for t in texts if t is not None)}
