"""Slots for requests that hold their thread while they wait (for a run to finish).

A web process has a fixed number of threads. Callers that wait (`?wait=`, the synchronous run) may hold at most
LANGRUN_WAITS_PER_PROCESS of them, and one account at most LANGRUN_WAITS_PER_USER, so that waiting callers can
never take every thread from the rest (health checks, webhooks that answer at once, other accounts). The counts
are per process: they guard that process's threads, cost nothing to keep and cannot leak when a process dies.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

_lock = threading.Lock()
_waiting: dict[str, int] = {}


@contextmanager
def wait_slot(*, owner: str) -> Iterator[bool]:
    """Whether this request may wait (True while it holds a slot); False when its account or the process has no slot free."""
    with _lock:
        mine, everyone = _waiting.get(owner, 0), sum(_waiting.values())
        granted = mine < settings.LANGRUN_WAITS_PER_USER and everyone < settings.LANGRUN_WAITS_PER_PROCESS
        if granted:
            _waiting[owner] = mine + 1
    try:
        yield granted
    finally:
        if granted:
            with _lock:
                left = _waiting[owner] - 1
                if left:
                    _waiting[owner] = left
                else:
                    del _waiting[owner]
