"""The benchmark: `make bench [PROFILE=embedded|production] [SCENARIO=quick|io|waits|streams] [N=5000] [C=32] [CLUSTERS=1] [ROUNDS=3]`.

One run: a fresh database of its own (a temporary SQLite file, or a dedicated
PostgreSQL database that is dropped at the end), a unique django-q2 cluster name,
the service started as it is deployed (gunicorn plus CLUSTERS `qcluster`
processes), a user, an API key and a 4-node flow. A separate process sends N
requests at concurrency C, first to the baseline view (insert one row, answer
202) and then to the flow's webhook; the ledger then tells when every run ended.
With ROUNDS, the two phases take turns that many times and the figures pool them.
SCENARIO=io runs a flow that calls a local API answering after DELAY seconds
(bench/slow_server.py) instead, and also reports when the last run ended, how many
runs waited on that API at once, and the most database connections the service held.
SCENARIO=waits and SCENARIO=streams send the webhooks while HELD requests are held open
(callers waiting for slow runs, or event streams; bench/held.py) and report what became of those.
Prints a table and writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

from bench import held as held_requests
from bench.procs import ConnectionSampler, MemorySampler, PeakSampler, cpu_s, machine_cpu_s, pss_mb, threads
from bench.report import print_table, summarise

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
ENDPOINT = "bench-orders"

EXTRACT_FLOW = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "order", "type": "Extract", "params": {"query": "order"}},
        {"id": "notice", "type": "Template", "params": {"template": "Order {id} for {customer.name}: {total:.2f}"}},
        {"id": "out", "type": "Output", "params": {"name": "notice"}},
    ],
    "edges": [
        {"source": "hook", "target": "order", "target_input": "data"},
        {"source": "order", "target": "notice", "target_input": "data"},
        {"source": "notice", "target": "out", "target_input": "value"},
    ],
}


# A flow that waits on the network, as the flows people run from webhooks do (an LLM, an API).
def io_flow(url: str) -> dict:
    return {
        "nodes": [
            {"id": "hook", "type": "Webhook"},
            {"id": "call", "type": "HTTPRequest", "params": {"method": "POST", "url": url, "body": {"ping": True}, "timeout": 60}},
            {"id": "out", "type": "Output", "params": {"name": "answer"}},
        ],
        "edges": [
            {"source": "hook", "target": "call", "target_input": "data"},
            {"source": "call", "source_output": "body", "target": "out", "target_input": "value"},
        ],
    }


# --- The run -------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="langrun-bench-"))
        self.port = args.port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.pg_admin_url: str | None = None
        self.db_name = f"langrun_bench_{os.getpid()}"
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(
            DJANGO_SETTINGS_MODULE="bench.settings",
            SECRET_KEY=secrets.token_urlsafe(40),
            LANGRUN_CLUSTER_NAME=f"langrun-bench-{os.getpid()}",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            LANGRUN_DATA_DIR=str(self.tmp),
            DEBUG="false",
        )
        if args.profile == "production":
            server = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL") or DEFAULT_PG
            parts = urlsplit(server)
            self.pg_admin_url = urlunsplit(parts._replace(path="/postgres"))
            env["DATABASE_URL"] = urlunsplit(parts._replace(path="/" + self.db_name))
            env["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS
        else:
            env["DATABASE_URL"] = f"sqlite:///{self.tmp / 'bench.sqlite3'}"
        if args.workers:
            env["LANGRUN_WORKERS"] = str(args.workers)
        if args.scenario in ("io", *held_requests.SCENARIOS):
            env["LANGRUN_HTTP_ALLOWED_HOSTS"] = "127.0.0.1"
        if args.scenario == "waits":  # the held callers' `?wait=` is what they get, unless the caller set a cap
            env.setdefault("LANGRUN_WEBHOOK_MAX_WAIT", str(held_requests.WAIT_S))
        self.env = env
        self.api_url = ""

    # set-up and tear-down

    def create_database(self) -> None:
        if self.pg_admin_url:
            import psycopg

            with psycopg.connect(_libpq(self.pg_admin_url), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}"')
                conn.execute(f'CREATE DATABASE "{self.db_name}"')
        os.environ.update(self.env)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)

    def create_flow(self) -> tuple[str, str]:
        from flows.services.flows import flow_create
        from langrun.models import User
        from langrun.services import api_key_create

        user = User.objects.create_user("bench")
        data = io_flow(self.api_url) if self.args.scenario == "io" else EXTRACT_FLOW
        flow_create(user=user, name="Benchmark orders", endpoint_name=ENDPOINT, data=data)
        self.flow_shape = " -> ".join(n["type"] for n in data["nodes"])
        return api_key_create(user=user, name="bench").key, self.flow_shape

    def drop_database(self) -> None:
        from django.db import connections

        try:
            from django_q.brokers import get_broker

            get_broker().purge_queue()
        except Exception:
            pass
        connections.close_all()
        if self.pg_admin_url:
            import psycopg

            with psycopg.connect(_libpq(self.pg_admin_url), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def start_slow_api(self) -> None:
        """The local API the io scenario's flow calls, in a process of its own; its port is its first line."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.slow_server", "--delay", str(self.args.delay)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.procs["slow_api"] = proc
        self.api_url = f"http://127.0.0.1:{int(proc.stdout.readline())}/api"

    def slow_api_stats(self) -> dict:
        return requests.get(self.api_url.replace("/api", "/stats"), timeout=10).json()

    def start_service(self) -> None:
        self.start(
            "web",
            ["-m", "gunicorn", "langrun.wsgi", "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.args.web_workers)],
        )
        for i in range(self.args.clusters):
            self.start(f"cluster{i + 1}", ["manage.py", "qcluster"])

    def stop_service(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def root_pids(self) -> list[int]:
        return [p.pid for name, p in self.procs.items() if name != "slow_api"]

    def web_pids(self) -> list[int]:
        return [self.procs["web"].pid]

    def cluster_pids(self) -> list[int]:
        return [p.pid for name, p in self.procs.items() if name.startswith("cluster")]

    # measuring

    def wait_first_202(self, key: str, deadline_s: float = 60) -> str:
        deadline = time.monotonic() + deadline_s
        body = json.dumps({"order": {"id": -1, "customer": {"name": "first"}, "total": 0}})
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise SystemExit(f"{name} exited during start-up:\n{self.log(name)}")
            try:
                r = requests.post(
                    f"{self.url}/api/v1/webhook/{ENDPOINT}",
                    data=body,
                    headers={"x-api-key": key, "Content-Type": "application/json"},
                    timeout=5,
                )
                if r.status_code == 202:
                    return r.json()["run_id"]
            except requests.ConnectionError:
                pass
            time.sleep(0.02)
        raise SystemExit(f"no 202 within {deadline_s} s:\n{self.log('web')}")

    def load(self, url: str, key: str | None, label: str) -> dict:
        out = self.tmp / f"load-{label}.json"
        argv = [sys.executable, "-m", "bench.load", url, str(out), "--n", str(self.args.n), "--c", str(self.args.c)]
        argv += ["--client", self.args.client]
        if key:
            argv += ["--key", key]
        subprocess.run(argv, cwd=ROOT, check=True)
        return json.loads(out.read_text())

    def wait_terminal(self, run_ids: list[str]) -> None:
        from flows.models import FlowRun

        stall_limit = self.args.stall_timeout
        remaining, last_remaining, last_progress = None, None, time.monotonic()
        while True:
            remaining = FlowRun.objects.unfinished().count()
            if remaining == 0:
                return
            if remaining != last_remaining:
                last_remaining, last_progress = remaining, time.monotonic()
            elif time.monotonic() - last_progress > stall_limit:
                print(f"warning: {remaining} runs made no progress for {stall_limit} s; counting them as lost", file=sys.stderr)
                return
            time.sleep(0.25)

    def log(self, name: str) -> str:
        try:
            return (self.tmp / f"{name}.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def run(args: argparse.Namespace) -> dict:
    bench = Bench(args)
    holds = args.scenario in held_requests.SCENARIOS
    try:
        if args.scenario == "io" or holds:
            bench.start_slow_api()
        bench.create_database()
        key, flow_shape = bench.create_flow()
        if holds:
            accounts = held_requests.accounts_create(count=args.held_accounts or args.held, flow_data=io_flow(bench.api_url))
        from django.db import connections

        connections.close_all()

        started = time.monotonic()
        bench.start_service()
        first_run = bench.wait_first_202(key)
        startup_s = time.monotonic() - started
        if args.clusters:
            bench.wait_terminal([first_run])
        time.sleep(1.0)  # let every process settle after its first request
        mem_idle = pss_mb(bench.root_pids())

        sampler = MemorySampler(bench.root_pids())
        sampler.start()
        connections_sampler = ConnectionSampler(bench.db_name) if bench.pg_admin_url else None
        threads_sampler = PeakSampler(lambda: threads(bench.web_pids()), interval=0.5) if holds else None
        if threads_sampler:
            threads_sampler.start()
        held = None
        # Each round measures the baseline and then the webhook, in that order; the figures pool the rounds.
        # The machine's speed drifts by more than 10% within minutes, and pairs close in time share it.
        baselines, hooks = [], []
        web = {"baseline": 0.0, "webhook": 0.0}
        machine = {"baseline": 0.0, "webhook": 0.0}
        cluster_cpu = 0.0
        for i in range(1, args.rounds + 1):
            web_0, machine_0 = cpu_s(bench.web_pids()), machine_cpu_s()
            baselines.append(bench.load(f"{bench.url}/bench/baseline", None, f"baseline-{i}"))
            web_1, machine_1 = cpu_s(bench.web_pids()), machine_cpu_s()
            web["baseline"] += web_1 - web_0
            machine["baseline"] += machine_1 - machine_0
            if holds:  # after the baseline, which stays the machine's floor without them
                held = held_requests.HeldRequests(scenario=args.scenario, base_url=bench.url, accounts=accounts, held=args.held)
                held.open()
            web_1, machine_1, cluster_1 = cpu_s(bench.web_pids()), machine_cpu_s(), cpu_s(bench.cluster_pids())
            try:
                hooks.append(bench.load(f"{bench.url}/api/v1/webhook/{ENDPOINT}", key, f"webhook-{i}"))
                web_2 = cpu_s(bench.web_pids())
            finally:
                if held:
                    held.load_ended()
                    held.close()
            if args.clusters:  # CLUSTERS=0 measures accepting alone; the runs stay queued
                bench.wait_terminal([])
            cluster_cpu += cpu_s(bench.cluster_pids()) - cluster_1
            machine_2 = machine_cpu_s()
            web["webhook"] += web_2 - web_1
            machine["webhook"] += machine_2 - machine_1
        # PSS can shrink a little between two samples (pages freed or newly shared), so the idle sample counts
        # towards the peak too: a short run whose load never outgrew the idle memory reports the idle figure.
        mem_peak = max(mem_idle, sampler.stop())
        report = summarise(args, bench, baselines, hooks, flow_shape)
        report.update(scenario=args.scenario)
        if args.scenario == "io":
            report.update(
                delay_s=args.delay,
                all_done_s=max(_all_done_s(hook) for hook in hooks),
                in_flight_peak=bench.slow_api_stats()["peak"],
                db_connections_peak=connections_sampler.stop() if connections_sampler else None,
            )
        elif holds:
            report.update(
                delay_s=args.delay,
                held=args.held,
                held_accounts=len(accounts),
                **held.figures(),
                db_connections_peak=connections_sampler.stop() if connections_sampler else None,
                web_threads_peak=threads_sampler.stop(),
            )
        elif connections_sampler:
            connections_sampler.stop()
        requests_sent = args.n * args.rounds
        report.update(
            web_cpu_ms_per_baseline_request=round(web["baseline"] * 1000 / requests_sent, 2),
            web_cpu_ms_per_webhook=round(web["webhook"] * 1000 / requests_sent, 2),
            cluster_cpu_ms_per_run=round(cluster_cpu * 1000 / requests_sent, 2) if args.clusters else None,
            # Everything on the machine, the load generator and the databases included: what a request really costs.
            machine_cpu_ms_per_baseline_request=round(machine["baseline"] * 1000 / requests_sent, 2),
            machine_cpu_ms_per_webhook_and_run=round(machine["webhook"] * 1000 / requests_sent, 2),
        )
        report.update(mem_idle_mb=round(mem_idle, 1), mem_peak_mb=round(mem_peak, 1), startup_s=round(startup_s, 2))
        if args.clusters and args.drain:
            report.update(drain(bench, key))
        return report
    finally:
        bench.stop_service()
        try:
            bench.drop_database()
        finally:
            if args.keep_logs:
                print(f"logs kept in {bench.tmp}", file=sys.stderr)
            else:
                subprocess.run(["rm", "-rf", str(bench.tmp)], check=False)


def _all_done_s(hook: dict) -> float | None:
    """From the phase's first request to the last of its runs ending."""
    from django.db.models import Max

    from flows.models import FlowRun

    ids = [r[2] for r in hook["results"] if r[0] == 202 and r[2]]
    last = FlowRun.objects.filter(pk__in=ids).aggregate(last=Max("finished_at"))["last"]
    return round(last.timestamp() - hook["started_at"], 2) if last and "started_at" in hook else None


def drain(bench: Bench, key: str) -> dict:
    """How fast the clusters alone work through a backlog: accept N runs while the flow is paused, then resume it.

    While runs are accepted at the same time, completion can never outrun acceptance; this shows what
    the clusters themselves manage (and how that grows with CLUSTERS). The flow is paused as an operator pauses it
    (its runs are held, not executed); stopping the cluster's processes instead could catch one holding SQLite's
    write lock, and the web would wait for it.
    """
    from django.db.models import Max

    from flows.models import Flow, FlowRun
    from flows.services.pause import flow_pause, flow_resume

    flow = Flow.objects.get(endpoint_name=ENDPOINT)
    flow_pause(flow=flow)
    try:
        backlog = bench.load(f"{bench.url}/api/v1/webhook/{ENDPOINT}", key, "backlog")
    finally:
        resumed = time.time()
        flow_resume(flow=flow)
    ids = [r[2] for r in backlog["results"] if r[0] == 202 and r[2]]
    bench.wait_terminal([])
    runs = FlowRun.objects.filter(pk__in=ids)
    done = runs.filter(status__in=[FlowRun.Status.SUCCEEDED, FlowRun.Status.FAILED]).count()
    last = runs.aggregate(last=Max("finished_at"))["last"]
    seconds = last.timestamp() - resumed if last else 0
    return {"drain_rps": round(done / seconds, 1) if seconds > 0 else 0.0, "drain_lost": len(ids) - done}


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _libpq(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["embedded", "production"], default="production")
    parser.add_argument(
        "--scenario",
        choices=["quick", "io", *held_requests.SCENARIOS],
        default="quick",
        help="quick flows, flows that wait on an API, or quick flows while requests are held open (bench/held.py)",
    )
    parser.add_argument(
        "--delay", type=float, default=None, help="seconds the slow API takes to answer (default: 1 for io, 20 for waits and streams)"
    )
    parser.add_argument("--held", type=_at_least_one, default=200, help="requests held open in the waits and streams scenarios")
    parser.add_argument("--held-accounts", type=int, default=0, help="accounts the held requests come from (default: one each)")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--c", type=int, default=32)
    parser.add_argument("--clusters", type=int, default=1, help="qcluster processes")
    parser.add_argument(
        "--rounds",
        type=_at_least_one,
        default=None,
        help="baseline and webhook phases measured this many times, in turn, and pooled (default 3; waits and streams: 1)",
    )
    parser.add_argument("--web-workers", type=int, default=0, help="gunicorn workers (default: as `serve`)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes per qcluster (default: LANGRUN_WORKERS)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stall-timeout", type=float, default=90, help="give up waiting when no run ends for this long")
    parser.add_argument("--out", default=str(RESULTS / "latest.json"))
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--no-drain", dest="drain", action="store_false", help="skip the backlog phase (N more webhooks)")
    parser.add_argument(
        "--client",
        choices=["auto", "aiohttp", "wrk"],
        default="auto",
        help="the load generator (bench/load.py); auto: wrk when it is installed, else aiohttp",
    )
    args = parser.parse_args()
    holds = args.scenario in held_requests.SCENARIOS
    if holds and args.rounds not in (None, 1):
        parser.error("--rounds: the waits and streams scenarios measure one round")
    args.rounds = args.rounds or (1 if holds else 3)
    if args.delay is None:
        args.delay = 20.0 if holds else 1.0
    if args.scenario == "io" or holds:
        args.drain = False  # the backlog phase measures quick runs' throughput
    if args.client == "auto":
        args.client = "wrk" if shutil.which("wrk") else "aiohttp"
    sys.path.insert(0, str(ROOT))
    if not args.web_workers:
        from langrun.management.commands.serve import web_workers_default

        args.web_workers = web_workers_default("sqlite" if args.profile == "embedded" else "postgresql")
    report = run(args)
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
