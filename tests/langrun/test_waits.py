"""Slots for waiting requests: a few per account and a share of the process, given back whatever happens."""

import pytest

from langrun.waits import wait_slot


def test_an_account_waits_at_most_its_share(settings):
    settings.LANGRUN_WAITS_PER_USER, settings.LANGRUN_WAITS_PER_PROCESS = 2, 10
    with wait_slot(owner="a") as first, wait_slot(owner="a") as second, wait_slot(owner="a") as third:
        assert (first, second, third) == (True, True, False)
        with wait_slot(owner="b") as other:
            assert other  # another account is not held back by this one
    with wait_slot(owner="a") as again:
        assert again


def test_the_process_keeps_threads_for_everything_else(settings):
    settings.LANGRUN_WAITS_PER_USER, settings.LANGRUN_WAITS_PER_PROCESS = 5, 3
    with wait_slot(owner="a") as a, wait_slot(owner="b") as b, wait_slot(owner="c") as c, wait_slot(owner="d") as d:
        assert (a, b, c, d) == (True, True, True, False)


def test_a_slot_is_given_back_when_the_wait_fails(settings):
    settings.LANGRUN_WAITS_PER_USER, settings.LANGRUN_WAITS_PER_PROCESS = 1, 1
    with pytest.raises(RuntimeError), wait_slot(owner="a"):
        raise RuntimeError("the database went away")
    with wait_slot(owner="a") as granted:
        assert granted
