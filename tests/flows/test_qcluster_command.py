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


def autogroup_nice() -> int:
    with open("/proc/self/autogroup") as f:  # "/autogroup-123 nice 0"
        return int(f.read().split()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="Linux's autogroup is not available here")
@pytest.mark.parametrize("own_session", [True, False])
def test_a_cluster_leading_its_own_session_lowers_its_sessions_group_too(settings, own_session):
    # Under autogroup, a niceness counts only within a session: a cluster started as a service of its own
    # would otherwise compete with gunicorn's session as an equal. One that shares a session (`serve`,
    # a shell) must leave the group alone, or it would lower gunicorn too.
    settings.LANGRUN_WORKER_NICE = 10

    def start() -> int:
        if own_session:
            os.setsid()  # a new session starts a new group, at nice 0
        before = autogroup_nice()
        cluster_priority_lower()
        return autogroup_nice() - before

    assert in_a_child(start) == (min(19, os.nice(0) + 10) if own_session else 0)
