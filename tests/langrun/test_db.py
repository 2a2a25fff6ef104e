"""The PostgreSQL backend's health check: no round trip on a quiet connection, and a dead one is still found."""

import os
import select
import time

import pytest
from django.db import connection, connections

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the health check is PostgreSQL's"),
]


@pytest.fixture
def connect():
    """Connections to the test database of their own, outside the test's transaction (autocommit)."""
    opened = []

    def make():
        wrapper = connections.create_connection("default")
        wrapper.connect()
        opened.append(wrapper)
        return wrapper

    yield make
    for wrapper in opened:
        wrapper.close()


def _last_query(admin, pid: int) -> str:
    with admin.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0]


def _wait_readable(wrapper) -> bool:
    return bool(select.select([wrapper.connection.fileno()], [], [], 5)[0])


def test_a_quiet_connection_is_usable_without_a_query(connect):
    checked = connect()
    with checked.cursor() as cursor:
        cursor.execute("SELECT 'before the health check'")
    assert checked.is_usable()
    assert checked.is_usable()
    # The server saw no statement after ours (Django's own check would have run SELECT 1).
    assert _last_query(connect(), checked.connection.info.backend_pid) == "SELECT 'before the health check'"


def test_a_terminated_connection_is_not_usable_and_the_next_query_reconnects(connect):
    checked, admin = connect(), connect()
    pid = checked.connection.info.backend_pid
    with admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    assert _wait_readable(checked)
    assert not checked.is_usable()
    checked.health_check_done = False
    checked.close_if_health_check_failed()  # what Django does before the first query of a request
    assert checked.connection is None
    with checked.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert checked.connection.info.backend_pid != pid


def test_a_connection_with_something_to_read_is_asked_with_a_query(connect):
    checked, other = connect(), connect()
    with checked.cursor() as cursor:
        cursor.execute("LISTEN langrun_health_test")
    with other.cursor() as cursor:
        cursor.execute("NOTIFY langrun_health_test")
    deadline = time.monotonic() + 5
    while not select.select([checked.connection.fileno()], [], [], 0.05)[0] and time.monotonic() < deadline:
        pass
    assert checked.is_usable()  # readable, yet alive: the SELECT 1 says so
    assert _last_query(other, checked.connection.info.backend_pid) == "SELECT 1"


@pytest.fixture
def high_descriptors():
    """Enough descriptors open in this process that the next connection's socket is numbered 1024 or more."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit on open files ({hard}) is below {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    held = []
    try:
        while not held or held[-1] < 1030:
            held.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_quiet_connection_numbered_past_1023_is_reused(high_descriptors, connect):
    checked = connect()
    assert checked.connection.fileno() >= 1024
    pid = checked.connection.info.backend_pid
    with checked.cursor() as cursor:
        cursor.execute("SELECT 'before the health check'")
    assert checked.is_usable()
    checked.health_check_done = False
    checked.close_if_health_check_failed()  # what Django does before the first query of a request
    assert checked.connection is not None
    assert checked.connection.info.backend_pid == pid
    assert _last_query(connect(), pid) == "SELECT 'before the health check'"
