"""Runs seen from above: counts over time by status (the admin's trend chart), finding a run by what a person
remembers of it, and the rows an export writes. Every function takes the user whose runs it may see."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from flows.models import FlowRun

# A trend's range: how many buckets, of which unit, and how to truncate a time to its bucket.
RANGES = {
    "24h": (24, timedelta(hours=1), TruncHour),
    "30d": (30, timedelta(days=1), TruncDay),
}
STATUSES = [status.value for status in FlowRun.Status]


@dataclass(frozen=True)
class Trend:
    """Runs received per bucket (hour or day) by status, oldest bucket first; every bucket present, empty ones at 0."""

    span: str  # a key of RANGES
    buckets: list[datetime]
    counts: dict[str, list[int]]  # status -> one count per bucket

    @property
    def totals(self) -> list[int]:
        return [sum(column) for column in zip(*self.counts.values(), strict=True)] if self.buckets else []

    @property
    def total(self) -> int:
        return sum(self.totals)


def flow_runs_visible(*, user) -> QuerySet[FlowRun]:
    """The runs `user` may see: a superuser's are everyone's, anyone else's their own flows' runs."""
    runs = FlowRun.objects.all()
    return runs if user.is_superuser else runs.filter(flow__user=user)


def flow_run_trend(*, user, span: str = "24h", now: datetime | None = None) -> Trend:
    """Runs received in the last 24 hours (per hour) or 30 days (per day, in the current time zone), by status."""
    size, step, trunc = RANGES[span]
    now = now or timezone.now()
    if span == "24h":  # hours counted in UTC: an hour's arithmetic there never meets a daylight-saving change
        last = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        buckets = [last - step * (size - 1 - i) for i in range(size)]
    else:  # calendar days of the current time zone, as TruncDay counts them
        today = timezone.localdate(now)
        buckets = [timezone.make_aware(datetime.combine(today - step * (size - 1 - i), time.min)) for i in range(size)]
    rows = (
        flow_runs_visible(user=user)
        .filter(received_at__gte=buckets[0])
        .annotate(bucket=trunc("received_at"))
        .values("bucket", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    index = {bucket: i for i, bucket in enumerate(buckets)}
    counts = {status: [0] * size for status in STATUSES}
    for row in rows:
        i = index.get(row["bucket"])
        if i is not None:
            counts[row["status"]][i] += row["n"]
    return Trend(span=span, buckets=buckets, counts=counts)


HEX_PREFIX = re.compile(r"^[0-9a-f-]{4,36}$")


def flow_runs_search(*, runs: QuerySet[FlowRun], term: str) -> QuerySet[FlowRun]:
    """Runs whose id starts with `term` (a full id or a prefix of at least 4 characters, dashes optional), whose
    flow's name contains it, or whose error text contains it (case-insensitive)."""
    term = term.strip()
    if not term:
        return runs
    match = Q(flow__name__icontains=term) | Q(error__icontains=term)
    if HEX_PREFIX.match(term.lower()):
        match |= Q(id__istartswith=_uuid_prefix(term.lower().replace("-", "")))
    return runs.filter(match)


def _uuid_prefix(hex_digits: str) -> str:
    """The start of a UUID's canonical text (8-4-4-4-12, with dashes): PostgreSQL compares its uuid as that text,
    other databases compare without dashes (Django's UUID text lookups strip them)."""
    parts, start = [], 0
    for size in (8, 4, 4, 4, 12):
        if start >= len(hex_digits):
            break
        parts.append(hex_digits[start : start + size])
        start += size
    return "-".join(parts)


EXPORT_FIELDS = [
    "id",
    "flow_id",
    "flow_name",
    "status",
    "trigger",
    "attempts",
    "received_at",
    "started_at",
    "finished_at",
    "duration_ms",
    "error",
    "replay_of_id",
    "version",
]


def flow_runs_export_rows(*, runs: QuerySet[FlowRun]) -> list[dict[str, Any]]:
    """One dict per run with EXPORT_FIELDS, times in ISO 8601, ids as strings (payloads and outputs stay out: the
    run's page and the API have them)."""
    rows = []
    # only(): the fields written, whatever the caller's queryset deferred (the admin's list defers the error) or
    # would load (bodies and payloads, up to a megabyte each).
    fields = ["id", "flow__name", "status", "trigger", "attempts", "received_at", "started_at", "finished_at", "error"]
    runs = runs.defer(None).select_related("flow", "version").only(*fields, "replay_of_id", "version__number")
    for run in runs.order_by("-received_at"):
        rows.append(
            {
                "id": str(run.id),
                "flow_id": str(run.flow_id),
                "flow_name": run.flow.name,
                "status": run.status,
                "trigger": run.trigger,
                "attempts": run.attempts,
                "received_at": _iso(run.received_at),
                "started_at": _iso(run.started_at),
                "finished_at": _iso(run.finished_at),
                "duration_ms": run.duration_ms,
                "error": run.error,
                "replay_of_id": str(run.replay_of_id) if run.replay_of_id else None,
                "version": run.version.number if run.version_id else None,
            }
        )
    return rows


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
