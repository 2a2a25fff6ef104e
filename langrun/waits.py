"""Slots for requests that hold their thread for long: callers that wait for a run, and open event streams.

Each held request costs its web process a thread. Callers that wait (`?wait=`, the synchronous run) may hold at most
LANGRUN_WAITS_PER_PROCESS of them, and one account at most LANGRUN_WAITS_PER_USER; open event streams at most
LANGRUN_STREAMS_PER_PROCESS, one account at most LANGRUN_STREAMS_PER_USER. So neither can grow a process without
bound, nor one account take every slot from the others. The counts are per process: they cost nothing to keep and
cannot leak when a process dies.

While a request waits it is *parked* (`parked()`): it holds a thread but no database connection and no CPU, and
the web server (langrun/gunicorn_worker.py) gives its turn to a new thread, so its process takes other requests as
if the parked one were not there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

# The defaults of the caps (settings.py reads them from the environment).
WAITS_PER_PROCESS = 64
WAITS_PER_USER = 32
STREAMS_PER_PROCESS = 64
STREAMS_PER_USER = 32


class Parking:
    """How many of this process's requests are parked, and who to tell when one parks."""

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0
        self.on_park = None  # set by the web server: called (from the parking thread) when a request parks

    @contextmanager
    def parked(self) -> Iterator[None]:
        with self._lock:
            self.count += 1
        if self.on_park is not None:
            self.on_park()
        try:
            yield
        finally:
            with self._lock:
                self.count -= 1


PARKING = Parking()
parked = PARKING.parked


class Slots:
    """A budget of long-held threads in this process, with a share per account; the limits are read from settings
    at each use, so that they can be changed (and tested) without a restart of the module."""

    def __init__(self, *, per_process: str, per_user: str):
        self.per_process, self.per_user = per_process, per_user
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def take(self, *, owner: str) -> bool:
        """Whether `owner` may hold one more (and now does); False when its share or the process's budget is used up."""
        with self._lock:
            mine, everyone = self._held.get(owner, 0), sum(self._held.values())
            if mine >= getattr(settings, self.per_user) or everyone >= getattr(settings, self.per_process):
                return False
            self._held[owner] = mine + 1
            return True

    def give_back(self, *, owner: str) -> None:
        with self._lock:
            left = self._held[owner] - 1
            if left:
                self._held[owner] = left
            else:
                del self._held[owner]

    @contextmanager
    def hold(self, *, owner: str) -> Iterator[bool]:
        """Whether this request may hold a slot (True while it does), given back whatever happens."""
        granted = self.take(owner=owner)
        try:
            yield granted
        finally:
            if granted:
                self.give_back(owner=owner)


WAITS = Slots(per_process="LANGRUN_WAITS_PER_PROCESS", per_user="LANGRUN_WAITS_PER_USER")
STREAMS = Slots(per_process="LANGRUN_STREAMS_PER_PROCESS", per_user="LANGRUN_STREAMS_PER_USER")


def wait_slot(*, owner: str):
    """A waiting caller's slot (see Slots.hold)."""
    return WAITS.hold(owner=owner)
