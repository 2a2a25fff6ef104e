"""bench.run pools the rounds of a phase: answers, time and latencies (issue #7's benchmark, `--rounds`)."""

import pytest

from bench.report import _phase_latency, pooled


def _wrk_phase(answers: int, elapsed_s: float, low_ms: float, high_ms: float) -> dict:
    # A wrk report whose latencies spread evenly from low_ms to high_ms.
    quantiles = [low_ms + (high_ms - low_ms) * i / 1000 for i in range(1001)]
    latency = {"p50": quantiles[500], "p95": quantiles[950], "p99": quantiles[990], "max": high_ms, "mean": (low_ms + high_ms) / 2}
    results = [[202, None, f"run-{low_ms}-{i}"] for i in range(answers)]
    return {
        "client": "wrk",
        "elapsed_s": elapsed_s,
        "sent": answers + 2,
        "latency_ms": {**latency, "quantiles": quantiles},
        "results": results,
    }


def test_one_round_is_reported_as_it_came():
    phase = _wrk_phase(10, 1.0, 0, 10)
    assert pooled([phase]) is phase


def test_wrk_rounds_pool_their_answers_time_and_quantiles():
    fast, slow = _wrk_phase(100, 1.0, 0, 10), _wrk_phase(300, 3.0, 10, 20)
    both = pooled([fast, slow])
    assert (both["client"], both["elapsed_s"], both["sent"], len(both["results"])) == ("wrk", 4.0, 404, 400)
    latency = _phase_latency(both)
    # A quarter of the answers took 0-10 ms, three quarters 10-20 ms.
    assert latency["p50"] == pytest.approx(10 + 10 * (0.50 - 0.25) / 0.75, abs=0.05)
    assert latency["p95"] == pytest.approx(10 + 10 * (0.95 - 0.25) / 0.75, abs=0.05)
    assert latency["p99"] == pytest.approx(10 + 10 * (0.99 - 0.25) / 0.75, abs=0.05)
    assert (latency["max"], latency["mean"]) == (20, pytest.approx(12.5))


def test_a_wrk_round_without_answers_adds_its_time_but_no_latency():
    answered = _wrk_phase(50, 1.0, 5, 15)
    silent = {"client": "wrk", "elapsed_s": 2.0, "sent": 4, "latency_ms": None, "results": [[0, None, None, "no answer"]] * 50}
    both = pooled([answered, silent])
    assert (both["elapsed_s"], len(both["results"])) == (3.0, 100)
    assert _phase_latency(both)["p50"] == pytest.approx(10, abs=0.05)
    nothing = pooled([silent, silent])
    assert _phase_latency(nothing) == dict.fromkeys(("p50", "p95", "p99", "max", "mean"))


def test_aiohttp_rounds_pool_each_request_latency():
    first = {"client": "aiohttp", "elapsed_s": 1.5, "results": [[202, i / 1000, f"a{i}"] for i in range(1, 101)]}
    second = {"client": "aiohttp", "elapsed_s": 0.5, "results": [[202, i / 1000, f"b{i}"] for i in range(101, 201)]}
    both = pooled([first, second])
    assert (both["elapsed_s"], len(both["results"])) == (2.0, 200)
    assert "latency_ms" not in both
    latency = _phase_latency(both)
    assert (latency["p50"], latency["p99"], latency["max"]) == (pytest.approx(100), pytest.approx(198), pytest.approx(200))


def test_rounds_must_be_one_or_more():
    import argparse

    from bench.run import _at_least_one

    assert _at_least_one("3") == 3
    for bad in ("0", "-2"):
        with pytest.raises(argparse.ArgumentTypeError):
            _at_least_one(bad)
