"""`qcluster` is django-q2's command with one addition: the cluster's CPU priority (LANGRUN_WORKER_NICE)."""

import ast
import ctypes
import gc
import os
import re
import traceback

import pytest
from django.core.management import get_commands, load_command_class
from django_q.management.commands.qcluster import Command as DjangoQCommand

from flows.management.commands.qcluster import Command, cluster_priority_lower


def in_a_child(fn):
    """Run `fn` in a forked process (so this one keeps its priority) and return what it returned.

    An exception in the child is printed and fails the test: the child's `finally` would otherwise swallow it.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.write(write, repr(fn()).encode())
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        written = f.read()
    assert written, "the child raised (its traceback is in the captured stderr)"
    return ast.literal_eval(written)


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


def autogroup() -> str:
    """This process's scheduling group: "/autogroup-123 nice 0", or "" for the one a machine's first session
    (a container's PID 1, a CI runner) starts in, which is no autogroup and has no niceness of its own."""
    with open("/proc/self/autogroup") as f:
        return f.read()


@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="Linux's autogroup is not available here")
def test_a_cluster_leading_its_own_session_lowers_its_sessions_group_too(settings):
    # Under autogroup, a niceness counts only within a session: a cluster started as a service of its own
    # would otherwise compete with gunicorn's session as an equal.
    settings.LANGRUN_WORKER_NICE = 10

    def start() -> str:
        os.setsid()  # a new session starts a new group, at nice 0
        before = autogroup()
        cluster_priority_lower()
        return f"{before} -> {autogroup()}"

    expected = min(19, os.nice(0) + 10)
    assert re.fullmatch(rf"/autogroup-(\d+) nice 0\n -> /autogroup-\1 nice {expected}\n", in_a_child(start))


@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="Linux's autogroup is not available here")
def test_a_cluster_sharing_a_session_leaves_the_sessions_group_alone(settings):
    # One that shares a session (`serve`, a shell) must leave the group alone, or it would lower gunicorn too.
    settings.LANGRUN_WORKER_NICE = 10

    def start() -> str:
        before = autogroup()
        cluster_priority_lower()
        return f"{before == autogroup()} {os.nice(0)}"

    assert in_a_child(start) == f"True {min(19, os.nice(0) + 10)}"


def as_an_unprivileged_user() -> None:
    """Drop root, as a cluster run by a service account is; the kernel's rate limit spares only root."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)  # nobody
        # Changing user makes the process undumpable, and its /proc files root's; a service started as its
        # user from the outset owns them.
        ctypes.CDLL(None, use_errno=True).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE


@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="Linux's autogroup is not available here")
def test_clusters_started_together_as_a_service_user_each_lower_their_group(settings):
    # Unprivileged, the kernel takes one group niceness per 0.1 s machine-wide and answers EAGAIN in between:
    # three clusters started at once by a service manager must all get theirs.
    settings.LANGRUN_WORKER_NICE = 10
    go_read, go_write = os.pipe()
    children = []
    for _ in range(3):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # a cluster, in a session of its own
            try:
                os.close(go_write)
                as_an_unprivileged_user()
                os.setsid()
                os.read(go_read, 1)  # all start together
                cluster_priority_lower()
                os.write(write, autogroup().encode())
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(0)
        os.close(write)
        children.append((pid, read))
    os.close(go_read)
    os.write(go_write, b"go")  # one byte for each of the first two; the third reads EOF when we close
    os.close(go_write)
    seen = []
    for pid, read in children:
        os.waitpid(pid, 0)
        with os.fdopen(read) as f:
            seen.append(f.read())
    expected = min(19, os.nice(0) + 10)
    assert all(re.fullmatch(rf"/autogroup-\d+ nice {expected}\n", group) for group in seen), seen
    assert len(set(seen)) == 3  # three groups, one for each session


def test_the_command_freezes_the_loaded_objects_before_starting_the_cluster(settings, monkeypatch):
    # The processes the cluster forks then share those objects' pages: the garbage collector never writes to them.
    settings.LANGRUN_WORKER_NICE = 0  # this process keeps its priority
    seen = []
    monkeypatch.setattr(DjangoQCommand, "handle", lambda self, *args, **options: seen.append(gc.get_freeze_count()))
    assert gc.get_freeze_count() == 0
    try:
        Command().handle(run_once=True)
    finally:
        gc.unfreeze()
    assert seen[0] > 0
