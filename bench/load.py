"""Load generator: POSTs N requests at concurrency C and records every response.

Run as its own process (`python -m bench.load URL OUT --n N --c C --key KEY [--client wrk]`)
so that it does not share an interpreter with the measuring code. Writes a JSON document
with one `[status, latency_s, run_id]` per request, plus the wall time.

Two clients send the same requests: aiohttp (always there), and wrk (C, with bench/wrk.lua),
which costs the machine far less per request. On two cores the aiohttp client is what limits
the baseline (the bare insert), so the webhook's ratio to it reads too high (README,
"Performance"). wrk reports latency percentiles instead of each request's latency
(`latency_ms`), and counts its connection errors and timeouts (`errors`) as non-202 answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

WRK_SCRIPT = Path(__file__).resolve().with_name("wrk.lua")


async def _load(url: str, n: int, c: int, key: str | None) -> dict:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["x-api-key"] = key
    results: list[list] = []
    counter = iter(range(n))
    connector = aiohttp.TCPConnector(limit=c, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)

    async def sender(session: aiohttp.ClientSession) -> None:
        for i in counter:
            body = json.dumps({"order": {"id": i, "customer": {"name": f"customer {i % 97}"}, "total": i * 1.5}})
            started = time.perf_counter()
            try:
                async with session.post(url, data=body) as response:
                    text = await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                results.append([0, time.perf_counter() - started, None, type(exc).__name__])
                continue
            latency = time.perf_counter() - started
            run_id = None
            if status == 202:
                try:
                    run_id = json.loads(text).get("run_id")
                except ValueError:
                    pass
            results.append([status, latency, run_id])

    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        started = time.perf_counter()
        first_wall = time.time()
        await asyncio.gather(*(sender(session) for _ in range(c)))
        elapsed = time.perf_counter() - started
    return {"url": url, "n": n, "c": c, "client": "aiohttp", "started_at": first_wall, "elapsed_s": elapsed, "results": results}


def _load_wrk(url: str, n: int, c: int, key: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="langrun-wrk-") as tmp:
        done, report = Path(tmp) / "done", Path(tmp) / "report.json"
        env = dict(os.environ, BENCH_N=str(n), BENCH_KEY=key or "", BENCH_DONE=str(done), BENCH_REPORT=str(report))
        argv = ["wrk", "-t1", f"-c{c}", "-d3600s", "--timeout", "60s", "-s", str(WRK_SCRIPT), url]
        first_wall = time.time()
        wrk = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # The script stops sending after N responses; wrk itself waits out its duration unless interrupted.
        # A service that stops answering would hold wrk for that hour: the deadline gives up on it.
        deadline = time.monotonic() + max(300.0, n * 0.05)
        while not done.exists() and wrk.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if wrk.poll() is None:
            wrk.send_signal(signal.SIGINT)
        try:
            _, stderr = wrk.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # never left loading the service
            wrk.kill()
            _, stderr = wrk.communicate()
        if not report.exists():
            raise SystemExit(f"wrk wrote no report (exit {wrk.returncode}): {stderr.decode(errors='replace')}")
        data = json.loads(report.read_text())
    results = [[status, None, run_id or None] for status, run_id in data["results"]]
    results += [[0, None, None, "wrk error"]] * min(data["errors"], max(0, n - len(results)))
    results += [[0, None, None, "no answer"]] * max(0, n - len(results))  # cut off by the deadline
    # wrk sends a request per connection ahead of the last answer it records: up to C more reach the service.
    return {"url": url, "n": n, "c": c, "client": "wrk", "started_at": first_wall, "elapsed_s": data["elapsed_s"],
            "sent": data["sent"], "latency_ms": data["latency_ms"], "results": results}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--c", type=int, required=True)
    parser.add_argument("--key", default=None)
    parser.add_argument("--client", choices=["aiohttp", "wrk"], default="aiohttp")
    args = parser.parse_args()
    if args.client == "wrk":
        report = _load_wrk(args.url, args.n, args.c, args.key)
    else:
        report = asyncio.run(_load(args.url, args.n, args.c, args.key))
    with open(args.out, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
