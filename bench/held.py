"""Requests the service holds open while the quick load runs: `make bench SCENARIO=waits|streams [HELD=200]`.

waits: HELD callers each POST a webhook of a slow flow (Webhook -> HTTPRequest to bench/slow_server.py, which answers
after DELAY seconds -> Output) with `?wait=30`, and keep waiting for the answer. streams: HELD event streams, half
`GET /api/v1/runs/{id}/events` of slow runs their client started just before by a webhook, half
`GET /api/v1/webhook-events/<slow flow>`, read in the background until the load ends.

Each held request comes from an account of its own (`--held-accounts` spreads them over fewer), as many clients
would, so that the per-process budgets of langrun/waits.py are what a refusal measures, not one account's share.
The requests are sent from one thread of the benchmark's process running an asyncio loop with aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass

import aiohttp

SCENARIOS = ("waits", "streams")
WAIT_S = 30  # what the held callers ask for with `?wait=`
PREFIX = "bench-held-"
# A held request that is not in place after this long is measured as it is.
SETTLE_TIMEOUT_S = 60.0
# How long after the end of its wait a caller's answer is still awaited before it is given up (a busy machine).
ANSWER_GRACE_S = 15.0


@dataclass
class Account:
    key: str
    endpoint: str


@dataclass
class Held:
    """One held request: its status (None until its headers arrived), what it read, and how it ended."""

    started: float = 0.0
    status: int | None = None
    finished_run: bool = False
    events: int = 0
    error: str = ""
    ended: float | None = None
    answer_s: float | None = None


def accounts_create(*, count: int, flow_data: dict) -> list[Account]:
    """`count` accounts, each with an API key and the slow flow of its own."""
    from flows.services.flows import flow_create
    from langrun.models import User
    from langrun.services import api_key_create

    accounts = []
    logging.disable(logging.INFO)  # a line per flow version recorded
    try:
        for i in range(count):
            user = User.objects.create_user(f"{PREFIX}{i}")
            endpoint = f"{PREFIX}{i}"
            flow_create(user=user, name=f"Benchmark slow {i}", endpoint_name=endpoint, data=flow_data)
            accounts.append(Account(key=api_key_create(user=user, name="bench").key, endpoint=endpoint))
    finally:
        logging.disable(logging.NOTSET)
    return accounts


class HeldRequests:
    """HELD requests of one scenario, opened by open() and given up by close(); figures() reports them."""

    def __init__(self, *, scenario: str, base_url: str, accounts: list[Account], held: int):
        from flows.models import FlowRun

        self.scenario, self.base_url, self.accounts = scenario, base_url, accounts
        self.requests = [Held() for _ in range(held)]
        self.terminal = {str(status) for status in FlowRun.TERMINAL}
        self.settle_s: float | None = None
        self.open_at_load_end: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: list[asyncio.Task] = []
        self._session: aiohttp.ClientSession | None = None

    # opening and closing

    def open(self) -> None:
        """Send every held request, and return once they are in place: for waits, every caller's run is recorded
        (a caller the service holds is then waiting) or answered; for streams, every stream has its response
        headers or has ended. At most SETTLE_TIMEOUT_S; `settle_s` says how long it took."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="held-requests", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        started, deadline = time.monotonic(), time.monotonic() + SETTLE_TIMEOUT_S
        while not self._in_place() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.settle_s = round(time.monotonic() - started, 2)

    def load_ended(self) -> None:
        self.open_at_load_end = sum(1 for r in self.requests if r.ended is None)

    def close(self) -> None:
        """Waiting callers get until their wait is over (plus a grace) to be answered; streams end now. Whatever is
        left is cancelled: its connection is closed, and the service notices at its next write."""
        if self._loop is None:
            return
        if self.scenario == "waits":
            deadline = max(r.started for r in self.requests) + WAIT_S + ANSWER_GRACE_S
            while any(r.ended is None for r in self.requests) and time.monotonic() < deadline:
                time.sleep(0.1)
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _in_place(self) -> bool:
        if self.scenario == "streams":
            return all(r.status is not None or r.ended is not None for r in self.requests)
        from flows.models import FlowRun

        recorded = FlowRun.objects.filter(flow__endpoint_name__startswith=PREFIX).count()
        return recorded >= len(self.requests) or all(r.ended is not None for r in self.requests)

    async def _start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=60))
        for i, held in enumerate(self.requests):
            account = self.accounts[i % len(self.accounts)]
            if self.scenario == "waits":
                coroutine = self._wait(held, account)
            elif i % 2 == 0:
                coroutine = self._run_events(held, account)
            else:
                coroutine = self._stream(held, account, f"/api/v1/webhook-events/{account.endpoint}")
            self._tasks.append(asyncio.ensure_future(self._timed(held, coroutine)))

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # the requests

    async def _timed(self, held: Held, coroutine) -> None:
        held.started = time.monotonic()
        try:
            await coroutine
        except asyncio.CancelledError:
            held.error = held.error or "cancelled"
            raise
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            held.error = type(exc).__name__
        finally:
            if held.ended is None:
                held.ended = time.monotonic()

    def _post(self, account: Account, query: str = "", timeout: float | None = None):
        body = json.dumps({"order": {"id": 0, "customer": {"name": "held"}, "total": 1.0}})
        headers = {"x-api-key": account.key, "Content-Type": "application/json"}
        url = f"{self.base_url}/api/v1/webhook/{account.endpoint}{query}"
        return self._session.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout))

    async def _wait(self, held: Held, account: Account) -> None:
        async with self._post(account, f"?wait={WAIT_S}", timeout=WAIT_S + ANSWER_GRACE_S) as response:
            held.status = response.status
            body = await response.json(content_type=None)
        held.ended = time.monotonic()
        held.answer_s = held.ended - held.started
        held.finished_run = held.status == 200 and isinstance(body, dict) and body.get("status") in self.terminal

    async def _run_events(self, held: Held, account: Account) -> None:
        async with self._post(account, timeout=60) as response:
            body = await response.json(content_type=None)
        if response.status != 202:
            held.error = f"webhook answered {response.status}"
            return
        await self._stream(held, account, f"/api/v1/runs/{body['run_id']}/events")

    async def _stream(self, held: Held, account: Account, path: str) -> None:
        headers = {"x-api-key": account.key, "Accept": "text/event-stream"}
        async with self._session.get(self.base_url + path, headers=headers) as response:
            held.status = response.status
            if response.status != 200:
                await response.read()
                return
            async for line in response.content:
                if line.startswith(b"event:"):
                    held.events += 1

    # the figures

    def figures(self) -> dict:
        out = {"held_settle_s": self.settle_s, "held_open_at_load_end": self.open_at_load_end}
        if self.scenario == "waits":
            answered = [r.answer_s for r in self.requests if r.answer_s is not None]
            out.update(
                held_answered_200=sum(1 for r in self.requests if r.finished_run),
                held_answered_202=sum(1 for r in self.requests if r.status == 202),
                # Of those, the callers the service held until their wait ran out (the run was not done in time);
                # a caller past a cap is answered as fast as any webhook.
                held_answered_202_waited=sum(1 for r in self.requests if r.status == 202 and (r.answer_s or 0) >= WAIT_S / 2),
                held_other=sum(1 for r in self.requests if not r.finished_run and r.status != 202),
                held_answer_s_max=round(max(answered), 2) if answered else None,
            )
        else:
            out.update(
                held_open=sum(1 for r in self.requests if r.status == 200),
                held_refused=sum(1 for r in self.requests if r.status is not None and r.status != 200),
                held_events_received=sum(r.events for r in self.requests),
                held_errors=sum(1 for r in self.requests if r.status is None),
            )
        return out
