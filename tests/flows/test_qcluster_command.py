"""`qcluster` is django-q2's command with one addition: the cluster's CPU priority (LANGRUN_WORKER_NICE)."""

import os

import pytest
from django.core.management import get_commands, load_command_class
from django_q.management.commands.qcluster import Command as DjangoQCommand

from flows.management.commands.qcluster import Command, cluster_priority_lower


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


def test_manage_py_qcluster_is_langruns_command():
    assert get_commands()["qcluster"] == "flows"
    command = load_command_class("flows", "qcluster")
    assert isinstance(command, Command) and isinstance(command, DjangoQCommand)


@pytest.mark.parametrize("nice", [0, 7, -3])
def test_the_cluster_lowers_its_priority_by_the_setting(settings, nice):
    settings.LANGRUN_WORKER_NICE = nice
    before = os.nice(0)
    assert in_a_child(cluster_priority_lower) == min(19, before + max(0, nice))
    assert os.nice(0) == before  # this process keeps its own


def test_the_command_lowers_the_priority_before_starting_the_cluster(settings, monkeypatch):
    settings.LANGRUN_WORKER_NICE = 5
    before = os.nice(0)
    seen = []
    monkeypatch.setattr(DjangoQCommand, "handle", lambda self, *args, **options: seen.append(os.nice(0)))

    def start() -> int:
        Command().handle(run_once=True)
        return seen[0]  # the niceness django-q2's cluster started with

    assert in_a_child(start) == min(19, before + 5)
