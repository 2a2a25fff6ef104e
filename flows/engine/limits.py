"""The size limit on what a node produces, how a value's size is measured without writing it out, and how
work that turns out slow leaves the event loop."""

from __future__ import annotations

import contextvars
import time
from json.encoder import encode_basestring
from typing import Any

from flows.engine.errors import NodeError

# The default of RunContext.max_output_bytes (the service sets LANGRUN_MAX_OUTPUT_BYTES).
DEFAULT_MAX_OUTPUT_BYTES = 4 * 1024 * 1024


class OutputTooLarge(NodeError):
    """A node's output, or a value a component was building, passed the run's output limit."""

    def __init__(self, limit: int, what: str = "its output"):
        super().__init__(f"{what} is larger than the limit of {limit} bytes (LANGRUN_MAX_OUTPUT_BYTES).")


# The default of RunContext.max_run_output_bytes (the service sets LANGRUN_MAX_RUN_OUTPUT_BYTES).
DEFAULT_MAX_RUN_OUTPUT_BYTES = 64 * 1024 * 1024


class RunOutputTooLarge(NodeError):
    """The outputs of a run's nodes together passed the run's limit (each node within its own)."""

    def __init__(self, limit: int):
        super().__init__(f"the run's outputs together are larger than the limit of {limit} bytes (LANGRUN_MAX_RUN_OUTPUT_BYTES).")


class _Passed(Exception):
    pass


def json_size(value: Any, *, limit: int) -> int:
    """The size of `value` written as compact JSON in UTF-8, or a number above `limit` as soon as it passes it.

    A container reached again through another reference is measured once and counted each time, so
    a value of a few shared lists that would write out as gigabytes is measured in microseconds, and
    a large value is only walked until it passes the limit. Values JSON cannot hold count as their
    text (as the run's record writes them). Raises NodeError for a value nested too deeply to write, and
    NeedsThread when measuring it holds the runner's event loop too long (see InlineBudget).
    """
    measured: dict[int, int] = {}
    budget = InlineBudget()  # measuring a large value on the event loop moves the node to a thread

    def container(item: Any, total: int) -> int:
        budget.check()
        known = measured.get(id(item))
        if known is not None:
            return known
        own = 1 + (len(item) or 1)  # brackets and separators
        if type(item) is dict:
            own += len(item)  # colons
            for name in item:
                own += _text(name if type(name) is str else str(name))
            members = item.values()
        else:
            members = item
        for member in members:
            kind = type(member)
            if kind is str:
                own += _text(member)
            elif kind is dict or kind is list or kind is tuple:
                own += container(member, total + own)
            else:
                own += scalar(member)
            if total + own > limit:
                raise _Passed
        measured[id(item)] = own
        return own

    def scalar(item: Any) -> int:
        if item is None or item is True:
            return 4
        if item is False:
            return 5
        kind = type(item)
        if kind is float:
            return len(repr(item)) if item - item == 0 else 9  # NaN and the infinities: at most "-Infinity"
        if kind is int:
            try:
                return len(repr(item))
            except ValueError:  # too many digits to write out as text
                return item.bit_length() * 30103 // 100000 + 2
        return _text(str(item))

    kind = type(value)
    try:
        if kind is str:
            result = _text(value)
        elif kind is dict or kind is list or kind is tuple:
            result = container(value, 0)
        else:
            result = scalar(value)
    except _Passed:
        return limit + 1
    except RecursionError:
        raise NodeError("A value is nested too deeply to be recorded.") from None
    return result if result <= limit else limit + 1


def _text(text: str) -> int:
    encoded = encode_basestring(text)
    return len(encoded) if encoded.isascii() else len(encoded.encode("utf-8", "surrogatepass"))


def check_output_size(value: Any, *, limit: int | None, what: str = "its output") -> None:
    """Raise OutputTooLarge when `value` written as JSON would be larger than `limit` bytes (None: no limit)."""
    if limit is not None and json_size(value, limit=limit) > limit:
        raise OutputTooLarge(limit, what)


# Set while a quick component runs inline on the runner's event loop, where other runs wait for it.
_inline_on_loop: contextvars.ContextVar[bool] = contextvars.ContextVar("langrun_inline_on_loop", default=False)


class NeedsThread(BaseException):
    """Raised by a quick component's work, running inline on the event loop, that needs more than a moment.

    The runner then runs the component again in a thread; quick components only compute on what they
    are given, so running one again is harmless. A BaseException, so `except Exception` lets it through.
    """


def leave_loop_if_inline() -> None:
    """Raise NeedsThread when called inline on the runner's event loop; elsewhere (a thread) do nothing."""
    if _inline_on_loop.get():
        raise NeedsThread


# How long a quick component's work may hold the runner's event loop before it moves to a thread.
INLINE_SECONDS = 0.01


class InlineBudget:
    """A quick component's time on the event loop: past INLINE_SECONDS, `check()` raises NeedsThread, and the
    runner finishes the component in a thread, where other runs do not wait for it. Off the loop it does nothing."""

    __slots__ = ("inline", "until")

    def __init__(self, seconds: float = INLINE_SECONDS):
        self.inline = _inline_on_loop.get()
        self.until = time.perf_counter() + seconds if self.inline else 0.0

    def check(self) -> None:
        if self.inline and time.perf_counter() > self.until:
            raise NeedsThread
