"""The benchmark script runs end to end (a small N) and writes the fields issue #7 pins; the figures are not judged here."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from django.conf import settings

from tests.e2e.helpers import ROOT

pytestmark = pytest.mark.e2e

PINNED = [
    "profile", "n", "c", "clusters", "accepted_rps", "baseline_rps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "non_202",
    "completed_rps", "lost", "failed", "mem_idle_mb", "mem_peak_mb", "startup_s",
]  # fmt: skip


@pytest.mark.parametrize(("client", "rounds"), [("aiohttp", 1), ("aiohttp", 2), ("wrk", 2)])
def test_the_benchmark_runs_and_writes_its_results(tmp_path, client, rounds):
    if client == "wrk" and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (.ci/run installs it)")
    profile = "production" if settings.REDIS_URL else "embedded"
    out = tmp_path / "latest.json"
    argv = [sys.executable, "-m", "bench.run", "--profile", profile, "--n", "60", "--c", "4", "--out", str(out), "--client", client]
    argv += ["--rounds", str(rounds)]
    done = subprocess.run(argv, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert set(PINNED) <= set(report)
    assert (report["profile"], report["n"], report["c"], report["clusters"], report["client"]) == (profile, 60, 4, 1, client)
    assert (report["non_202"], report["lost"], report["failed"], report["succeeded"]) == (0, 0, 0, 60 * rounds)
    assert report["rounds"] == len(report["round_ratios"]) == len(report["round_p99_ms"]) == rounds
    assert all(ratio > 0 for ratio in report["round_ratios"]) and report["baseline_p99_ms"] > 0
    assert report["accepted_rps"] > 0 and report["baseline_rps"] > 0 and report["completed_rps"] > 0
    assert report["drain_lost"] == 0 and report["drain_rps"] > 0
    assert 0 < report["mem_idle_mb"] <= report["mem_peak_mb"]
    assert "accepted / baseline" in done.stdout
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"] <= report["max_ms"]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (.ci/run installs it)")
def test_the_wrk_client_records_every_refusal_as_a_non_202(tmp_path):
    # A service that answers every request with a 503: wrk's script still stops at N answers, and each
    # one is recorded with its status, no run id, and the latency percentiles wrk measured.
    import http.server
    import threading

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = tmp_path / "load.json"
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        argv = [sys.executable, "-m", "bench.load", url, str(out), "--n", "25", "--c", "3", "--client", "wrk"]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["client"] == "wrk" and len(report["results"]) == 25
    assert {(status, run_id) for status, _, run_id in report["results"]} == {(503, None)}
    assert report["sent"] >= 25 and 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["max"]
    quantiles = report["latency_ms"]["quantiles"]  # what bench.run pools rounds with: sorted, ending at the maximum
    assert len(quantiles) == 1001 and quantiles == sorted(quantiles) and quantiles[-1] == report["latency_ms"]["max"]


@pytest.mark.parametrize("scenario", ["waits", "streams"])
def test_the_held_scenarios_report_what_became_of_the_held_requests(tmp_path, scenario):
    # Small: six held requests on runs that wait 3 s on the slow API, 200 webhooks meanwhile. Which held requests
    # the service honours depends on its caps and on how its processes share them; every one is accounted for.
    profile = "production" if settings.REDIS_URL else "embedded"
    out = tmp_path / "latest.json"
    argv = [sys.executable, "-m", "bench.run", "--profile", profile, "--scenario", scenario, "--held", "6", "--delay", "3"]
    argv += ["--n", "200", "--c", "4", "--client", "aiohttp", "--out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert set(PINNED) <= set(report)
    assert (report["scenario"], report["held"], report["held_accounts"], report["delay_s"], report["rounds"]) == (scenario, 6, 6, 3.0, 1)
    assert (report["non_202"], report["lost"], report["failed"], report["succeeded"]) == (0, 0, 0, 200)
    assert 0 < report["p50_ms"] <= report["p99_ms"] <= report["max_ms"]
    assert 0 <= report["held_settle_s"] < 60 and 0 <= report["held_open_at_load_end"] <= 6
    if scenario == "waits":
        assert report["held_answered_200"] + report["held_answered_202"] + report["held_other"] == 6
        assert report["held_other"] == 0 and report["held_answered_200"] >= 1
        assert 3 <= report["held_answer_s_max"] < 30  # an honoured wait lasted at least the API's delay
        assert 0 <= report["held_answered_202_waited"] <= report["held_answered_202"]
        assert "waits answered 200 / 202 (after waiting) / other" in done.stdout
    else:
        assert report["held_open"] + report["held_refused"] + report["held_errors"] == 6
        assert report["held_errors"] == 0 and report["held_open"] >= 1 and report["held_events_received"] >= 1
        assert "streams open / refused / errors" in done.stdout
    assert report["web_threads_peak"] > 0
    assert (report["db_connections_peak"] > 0) if profile == "production" else (report["db_connections_peak"] is None)
