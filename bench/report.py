"""The benchmark's figures: the load client's answers and the ledger turned into the report, and its table.

Rounds of one phase pool into one (`pooled`); `summarise` reads the runs' outcomes from the ledger; `print_table`
prints the report for a reader. bench/run.py runs the benchmark and calls them.
"""

from __future__ import annotations

import bisect
import os
import platform
import statistics
import time


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def _latency_ms(latencies: list[float]) -> dict[str, float | None]:
    """p50, p95, p99, max and mean of each request's latency (ms, sorted)."""
    return {
        "p50": _percentile(latencies, 0.50),
        "p95": _percentile(latencies, 0.95),
        "p99": _percentile(latencies, 0.99),
        "max": latencies[-1] if latencies else None,
        "mean": statistics.fmean(latencies) if latencies else None,
    }


def _phase_latency(phase: dict) -> dict[str, float | None]:
    if "latency_ms" in phase:
        latency = phase["latency_ms"] and {name: phase["latency_ms"][name] for name in ("p50", "p95", "p99", "max", "mean")}
    else:
        latency = _latency_ms(sorted(r[1] * 1000 for r in phase["results"] if r[1] is not None))
    return latency or dict.fromkeys(("p50", "p95", "p99", "max", "mean"))  # no answer at all: no latency to report


def pooled(phases: list[dict]) -> dict:
    """The rounds of one phase as one: every answer, the time they took together, and their latencies pooled.

    The aiohttp client records each request's latency; wrk reports its histogram's quantiles, which
    pool into the quantiles of all the rounds' requests (to a thousandth of them).
    """
    if len(phases) == 1:
        return phases[0]
    out = {
        "client": phases[0].get("client", "aiohttp"),
        "elapsed_s": sum(p["elapsed_s"] for p in phases),
        "results": [r for p in phases for r in p["results"]],
    }
    if all("sent" in p for p in phases):
        out["sent"] = sum(p["sent"] for p in phases)
    if any("latency_ms" in p for p in phases):
        out["latency_ms"] = _pooled_quantiles(phases)
    return out


def _pooled_quantiles(phases: list[dict]) -> dict[str, float] | None:
    tables = [
        (sum(1 for r in p["results"] if r[0]), p["latency_ms"]) for p in phases if p.get("latency_ms") and p["latency_ms"].get("quantiles")
    ]
    tables = [(n, latency) for n, latency in tables if n]
    if not tables:
        return None
    total = sum(n for n, _ in tables)

    def share_at_most(value: float) -> float:
        return sum(n * bisect.bisect_right(t["quantiles"], value) / len(t["quantiles"]) for n, t in tables) / total

    values = sorted({v for _, t in tables for v in t["quantiles"]})

    def quantile(q: float) -> float:
        low, high = 0, len(values) - 1  # the smallest value with at least a share q of the requests at or below it
        while low < high:
            mid = (low + high) // 2
            if share_at_most(values[mid]) >= q:
                high = mid
            else:
                low = mid + 1
        return values[low]

    return {
        "p50": quantile(0.50),
        "p95": quantile(0.95),
        "p99": quantile(0.99),
        "max": max(t["max"] for _, t in tables),
        "mean": sum(n * t["mean"] for n, t in tables) / total,
    }


def _rate(phase: dict) -> float:
    return sum(1 for r in phase["results"] if r[0] == 202) / phase["elapsed_s"] if phase["elapsed_s"] else 0.0


def summarise(args, bench, baselines: list[dict], hooks: list[dict], flow_shape: str) -> dict:
    from django.db.models import Count, Max, Min

    from flows.models import FlowRun

    baseline, hook = pooled(baselines), pooled(hooks)
    ok = [r for r in hook["results"] if r[0] == 202]
    latency, baseline_latency = _phase_latency(hook), _phase_latency(baseline)
    accepted_ids = [r[2] for r in ok if r[2]]
    runs = FlowRun.objects.filter(pk__in=accepted_ids)
    by_status = dict(runs.values_list("status").annotate(n=Count("pk")))
    succeeded = by_status.get(FlowRun.Status.SUCCEEDED, 0)
    failed = by_status.get(FlowRun.Status.FAILED, 0)
    completed = succeeded + failed
    # Each round's runs complete from its first accept to its last completion; the baseline rounds between do not count.
    completed_s = 0.0
    for round_hook in hooks:
        ids = [r[2] for r in round_hook["results"] if r[0] == 202 and r[2]]
        span = FlowRun.objects.filter(pk__in=ids).aggregate(first=Min("received_at"), last=Max("finished_at"))
        completed_s += (span["last"] - span["first"]).total_seconds() if span["first"] and span["last"] else 0.0
    workers = dict(runs.exclude(worker="").values_list("worker").annotate(n=Count("pk")))
    attempts_over_1 = runs.filter(attempts__gt=1).count()
    baseline_ok = sum(1 for r in baseline["results"] if r[0] == 202)
    return {
        "profile": args.profile,
        "n": args.n,
        "c": args.c,
        "clusters": args.clusters,
        "rounds": args.rounds,
        "web_workers": args.web_workers,
        "cluster_workers": int(bench.env.get("LANGRUN_WORKERS", "2")),
        "flow": flow_shape,
        "accepted_rps": round(len(ok) / hook["elapsed_s"], 1),
        "baseline_rps": round(baseline_ok / baseline["elapsed_s"], 1),
        "baseline_non_202": len(baseline["results"]) - baseline_ok,
        "client": hook.get("client", "aiohttp"),
        **{f"{name}_ms": round(value, 1) if value is not None else None for name, value in latency.items()},
        # The same server answering the bare insert: what the machine allows at this concurrency.
        **{f"baseline_{name}_ms": round(value, 1) if value is not None else None for name, value in baseline_latency.items()},
        "non_202": len(hook["results"]) - len(ok),
        # Each round's own figures: how much of the spread between runs is the machine's.
        "round_ratios": [round(_rate(h) / _rate(b), 3) if _rate(b) else None for b, h in zip(baselines, hooks, strict=True)],
        "round_p99_ms": [None if (p99 := _phase_latency(h)["p99"]) is None else round(p99, 1) for h in hooks],
        "completed_rps": round(completed / completed_s, 1) if completed_s else 0.0,
        "succeeded": succeeded,
        "failed": failed,
        "lost": len(ok) - succeeded - failed,
        "attempts_over_1": attempts_over_1,
        "runs_per_worker_process": sorted(workers.values(), reverse=True),
        "machine": f"{platform.node()} {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# --- Output --------------------------------------------------------------------

TABLE = [
    ("profile", "profile"),
    ("flow", "flow"),
    ("load client", "client"),
    ("n / c / clusters / rounds", None),
    ("baseline (insert + 202), req/s", "baseline_rps"),
    ("webhook accepted, req/s", "accepted_rps"),
    ("accepted / baseline", None),
    ("latency p50 / p95 / p99 / max, ms", None),
    ("baseline latency p50 / p99, ms", None),
    ("non-202", "non_202"),
    ("runs completed/s", "completed_rps"),
    ("succeeded / failed / lost", None),
    ("memory idle / peak, MB PSS", None),
    ("CPU ms: baseline req / webhook / run", None),
    ("machine CPU ms: baseline req / webhook + run", None),
    ("start-up to first 202, s", "startup_s"),
    ("backlog drained by the clusters, runs/s", "drain_rps"),
    ("slow API delay, s", "delay_s"),
    ("io: first request to last run ended, s", "all_done_s"),
    ("io: runs waiting on the API at once, peak", "in_flight_peak"),
    ("held: requests / accounts", None),
    ("held: in place after, s", "held_settle_s"),
    ("held: still held when the load ended", "held_open_at_load_end"),
    ("waits answered 200 / 202 (after waiting) / other", None),
    ("waits: longest answer, s", "held_answer_s_max"),
    ("streams open / refused / errors", None),
    ("streams: events received", "held_events_received"),
    ("database connections, peak", "db_connections_peak"),
    ("web threads, peak", "web_threads_peak"),
]


def print_table(r: dict) -> None:
    derived = {
        "n / c / clusters / rounds": f"{r['n']} / {r['c']} / {r['clusters']} / {r['rounds']}",
        "accepted / baseline": (f"{r['accepted_rps'] / r['baseline_rps']:.2f}" if r["baseline_rps"] else "-")
        + (f" (rounds: {', '.join(f'{x:.2f}' for x in r['round_ratios'] if x is not None)})" if r["rounds"] > 1 else ""),
        "latency p50 / p95 / p99 / max, ms": f"{r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']} / {r['max_ms']}",
        "baseline latency p50 / p99, ms": f"{r.get('baseline_p50_ms')} / {r.get('baseline_p99_ms')}",
        "succeeded / failed / lost": f"{r['succeeded']} / {r['failed']} / {r['lost']}",
        "memory idle / peak, MB PSS": f"{r['mem_idle_mb']} / {r['mem_peak_mb']}",
        "machine CPU ms: baseline req / webhook + run": (
            f"{r.get('machine_cpu_ms_per_baseline_request')} / {r.get('machine_cpu_ms_per_webhook_and_run')}"
        ),
        "CPU ms: baseline req / webhook / run": (
            f"{r['web_cpu_ms_per_baseline_request']} / {r['web_cpu_ms_per_webhook']} / {r['cluster_cpu_ms_per_run']}"
        ),
    }
    if "held" in r:
        derived["held: requests / accounts"] = f"{r['held']} ({r['scenario']}) / {r['held_accounts']}"
    if "held_answered_200" in r:
        derived["waits answered 200 / 202 (after waiting) / other"] = (
            f"{r['held_answered_200']} / {r['held_answered_202']} ({r['held_answered_202_waited']}) / {r['held_other']}"
        )
    if "held_open" in r:
        derived["streams open / refused / errors"] = f"{r['held_open']} / {r['held_refused']} / {r['held_errors']}"
    width = max(len(label) for label, _ in TABLE)
    for label, key in TABLE:
        if (key is None and label in derived) or key in r:
            print(f"{label:<{width}}  {derived[label] if key is None else r[key]}")
