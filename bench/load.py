"""Load generator: POSTs N requests at concurrency C and records every response.

Run as its own process (`python -m bench.load URL OUT --n N --c C --key KEY`) so
that it does not share an interpreter with the measuring code. Writes a JSON
document with one `[status, latency_s, run_id]` per request, plus the wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


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
    return {"url": url, "n": n, "c": c, "started_at": first_wall, "elapsed_s": elapsed, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--c", type=int, required=True)
    parser.add_argument("--key", default=None)
    args = parser.parse_args()
    report = asyncio.run(_load(args.url, args.n, args.c, args.key))
    with open(args.out, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
