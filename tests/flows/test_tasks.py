"""The worker's own settings: its CPU priority (LANGRUN_WORKER_NICE), applied when django-q2 spawns a worker process."""

import os

import pytest
from django_q.signals import post_spawn

from flows.tasks import worker_priority_lower


def in_a_child(fn) -> int:
    """Run `fn` in a forked process (so this one keeps its priority) and return what it returned."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.write(write, str(fn()).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        return int(f.read())


@pytest.mark.parametrize("nice", [0, 7])
def test_a_spawned_worker_lowers_its_priority_by_the_setting(settings, nice):
    settings.LANGRUN_WORKER_NICE = nice
    before = os.nice(0)
    after = in_a_child(lambda: post_spawn.send(sender="django_q", proc_name="Worker-1") and os.nice(0))
    assert after == min(19, before + nice)
    assert os.nice(0) == before  # the parent (the cluster's sentinel, here the test) keeps its own


def test_the_receiver_is_connected_to_django_q2s_signal():
    assert any(receiver is worker_priority_lower for _, receiver in ((r[0], r[1]()) for r in post_spawn.receivers))
