"""bench.held counts every held request once, by how it ended (`make bench SCENARIO=waits|streams`)."""

from bench.held import Account, Held, HeldRequests


def _held(scenario: str, requests: list[Held]) -> HeldRequests:
    held = HeldRequests(scenario=scenario, base_url="http://127.0.0.1:1", accounts=[Account(key="k", endpoint="e")], held=len(requests))
    held.requests = requests
    return held


def test_a_wait_counts_as_honoured_only_with_a_finished_run():
    requests = [
        Held(status=200, finished_run=True, answer_s=3.2, ended=1.0),
        Held(status=202, answer_s=0.1, ended=1.0),
        Held(status=202, answer_s=30.4, ended=1.0),  # held until its wait ran out
        Held(status=200, finished_run=False, answer_s=0.2, ended=1.0),  # a 200 without a terminal run
        Held(status=429, answer_s=0.1, ended=1.0),
        Held(error="ClientConnectionError", ended=1.0),
        Held(error="cancelled", ended=1.0),
    ]
    figures = _held("waits", requests).figures()
    assert (figures["held_answered_200"], figures["held_answered_202"], figures["held_other"]) == (1, 2, 4)
    assert figures["held_answered_202_waited"] == 1 and figures["held_answer_s_max"] == 30.4


def test_a_stream_is_open_with_its_headers_refused_with_another_status_and_an_error_without_any():
    requests = [
        Held(status=200, events=3, error="cancelled", ended=1.0),  # closed by the benchmark at the end
        Held(status=200, events=1, ended=1.0),
        Held(status=429, ended=1.0),
        Held(status=500, ended=1.0),
        Held(error="webhook answered 503", ended=1.0),
        Held(error="ServerDisconnectedError", ended=1.0),
    ]
    figures = _held("streams", requests).figures()
    assert (figures["held_open"], figures["held_refused"], figures["held_errors"]) == (2, 2, 2)
    assert figures["held_events_received"] == 4


def test_the_requests_still_held_when_the_load_ends_are_counted():
    held = _held("streams", [Held(status=200), Held(status=429, ended=1.0), Held()])
    held.load_ended()
    assert held.figures()["held_open_at_load_end"] == 2
