"""A local HTTP API that answers after DELAY seconds: what `make bench SCENARIO=io` runs its flows against.

Run as its own process (`python -m bench.slow_server --delay 1`): it prints the port it listens on, answers
every request after the delay with a small JSON body, and reports at `GET /stats` how many requests it has
answered and the most it held at once (the runs that were waiting on it together).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiohttp import web


def make_app(delay: float) -> web.Application:
    stats = {"in_flight": 0, "peak": 0, "answered": 0}

    async def stats_view(request: web.Request) -> web.Response:
        return web.json_response({"peak": stats["peak"], "answered": stats["answered"], "in_flight": stats["in_flight"]})

    async def slow(request: web.Request) -> web.Response:
        stats["in_flight"] += 1
        stats["peak"] = max(stats["peak"], stats["in_flight"])
        try:
            await request.read()
            await asyncio.sleep(delay)
            stats["answered"] += 1
            return web.json_response({"ok": True, "delay_s": delay})
        finally:
            stats["in_flight"] -= 1

    app = web.Application()
    app.router.add_get("/stats", stats_view)
    app.router.add_route("*", "/{tail:.*}", slow)
    return app


async def serve(delay: float, port: int) -> None:
    runner = web.AppRunner(make_app(delay), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.delay, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
