"""The processes a benchmark measures: their trees, memory (summed PSS), CPU time and threads, read from /proc, and
the database connections they hold, read from PostgreSQL."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def process_tree(root_pids: list[int]) -> list[int]:
    tree = _children()
    seen: list[int] = []
    todo = list(root_pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(tree.get(pid, []))
    return seen


def _field_sum(root_pids: list[int], name: str, field: str) -> int:
    """The sum over the process trees of one `field:` line of /proc/<pid>/<name> (its first number)."""
    total = 0
    for pid in process_tree(root_pids):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def pss_mb(root_pids: list[int]) -> float:
    """Summed proportional set size of the process trees: shared pages count once overall."""
    return _field_sum(root_pids, "smaps_rollup", "Pss") / 1024


def cpu_s(root_pids: list[int]) -> float:
    """CPU time (user + system) used so far by the process trees: a cost that holds on a busy machine."""
    ticks = 0
    for pid in process_tree(root_pids):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime + stime, and cutime + cstime: the CPU of children that already exited (django-q2 replaces
        # its workers every `recycle` tasks; without these, a replaced worker's CPU would go uncounted).
        ticks += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    """CPU time used by the whole machine so far (every process: client, web, clusters, databases, and anything else)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    busy = sum(fields[:3]) + sum(fields[5:8])  # user, nice, system, irq, softirq, steal (not idle, not iowait)
    return busy / os.sysconf("SC_CLK_TCK")


def threads(root_pids: list[int]) -> int:
    """Threads of the process trees now (a web process starts one for each request that parks)."""
    return _field_sum(root_pids, "status", "Threads")


class PeakSampler(threading.Thread):
    """The highest value `measure()` gave, sampled every `interval` seconds from start() to stop()."""

    def __init__(self, measure: Callable[[], float], interval: float):
        super().__init__(daemon=True)
        self.measure, self.interval, self.peak = measure, interval, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.measure())
            self._done.wait(self.interval)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak


class MemorySampler(PeakSampler):
    # Each sample reads smaps_rollup of every process, which walks its page tables in the kernel: at four
    # samples a second that took 0.12 of this machine's two cores away from the service it measures.
    def __init__(self, root_pids: list[int], interval: float = 1.0):
        super().__init__(lambda: pss_mb(root_pids), interval)


class ConnectionSampler(threading.Thread):
    """The most connections the service held to its PostgreSQL database at once (the benchmark's own left out)."""

    def __init__(self, db_name: str, interval: float = 0.2):
        super().__init__(daemon=True)
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self.own = [cursor.fetchone()[0]]
        self.db_name, self.interval, self.peak = db_name, interval, 0
        self._done = threading.Event()
        self.start()

    def run(self) -> None:
        from django.db import connection

        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                self.own.append(cursor.fetchone()[0])
                while not self._done.is_set():
                    cursor.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND NOT pid = ANY(%s)", [self.db_name, self.own]
                    )
                    self.peak = max(self.peak, cursor.fetchone()[0])
                    self._done.wait(self.interval)
        finally:
            connection.close()

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak
