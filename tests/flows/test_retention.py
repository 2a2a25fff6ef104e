"""Retention: prune_runs and the daily schedule, on a ledger of 100,000 runs."""

import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count
from django.utils import timezone
from django_q.models import OrmQ, Schedule, Task

from flows.exceptions import RunPayloadPruned
from flows.models import FlowRun, MetricCounter, NodeResult
from flows.retention import PRUNE_SCHEDULE_NAME, runs_prune
from flows.services.runs import flow_run_replay

DAY = timedelta(days=1)


def _bulk(flow, user, *, status, days_old, n, received_before=timedelta(minutes=5), **fields):
    """n runs: one made by the ORM, copied n - 1 times by the database (100,000 ORM objects would take most of the test)."""
    now = timezone.now()
    finished = now - days_old * DAY if status in FlowRun.TERMINAL else None
    version = flow.versions.first()
    template = FlowRun.objects.create(
        flow=flow, user=user, status=status, body='{"name": "x"}', payload={"name": "x"}, finished_at=finished, version=version, **fields
    )
    if finished is not None:  # received a moment before it finished, as every run is
        FlowRun.objects.filter(pk=template.pk).update(received_at=finished - received_before)
        template.refresh_from_db()
    if n > 1:
        columns = [f.column for f in FlowRun._meta.concrete_fields if f.column != "id"]
        new_id = "gen_random_uuid()" if connection.vendor == "postgresql" else "lower(hex(randomblob(16)))"
        cols = ", ".join(connection.ops.quote_name(c) for c in columns)
        table = FlowRun._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < %s) "  # noqa: S608 - names from the model
                f"INSERT INTO {table} (id, {cols}) SELECT {new_id}, {cols} FROM {table}, s WHERE id = %s",
                [n - 1, template.pk.hex if connection.vendor == "sqlite" else template.pk],
            )
    return template


def test_prune_on_100000_runs(flow, user, settings):
    # 100,000 runs: old and recent successes, old and recent failures, old cancelled, and queued/running that must stay.
    plan = [
        ("succeeded", 31, 50_000),
        ("succeeded", 5, 20_000),
        ("failed", 91, 10_000),
        ("failed", 40, 10_000),
        ("cancelled", 100, 4_000),
        ("succeeded", 29, 3_000),
        ("queued", 0, 2_000),
        ("running", 0, 1_000),
    ]
    for status, days, n in plan:
        _bulk(flow, user, status=status, days_old=days, n=n)
    old_run = FlowRun.objects.filter(status="succeeded", finished_at__lt=timezone.now() - 31 * DAY + timedelta(hours=1)).first()
    NodeResult.objects.create(run=old_run, node_id="hook", component_type="Webhook", status="succeeded", order=0)
    assert FlowRun.objects.count() == 100_000

    # A scrape over the whole ledger stays quick at this size, and counts every run.
    from flows.metrics import runs_metric_samples

    started = time.monotonic()
    samples = runs_metric_samples(FlowRun.objects.all())
    assert time.monotonic() - started < 15
    assert samples[("langrun_runs_accepted_total", f'{{"flow": "{flow.id}"}}')] == 100_000

    dry = runs_prune(dry_run=True)
    assert (dry.succeeded_runs, dry.failed_runs, dry.payloads_cleared) == (50_000, 14_000, 10_000)
    assert FlowRun.objects.count() == 100_000

    settings.LANGRUN_PRUNE_BATCH = 5000
    started = time.monotonic()
    result = runs_prune()
    elapsed = time.monotonic() - started
    assert (result.succeeded_runs, result.failed_runs) == (50_000, 14_000)
    remaining = dict(FlowRun.objects.values_list("status").annotate(n=Count("id")).order_by())
    assert remaining == {"succeeded": 23_000, "failed": 10_000, "queued": 2_000, "running": 1_000}
    # Payloads of finished runs older than 30 days are cleared; the run itself stays.
    assert result.payloads_cleared == 10_000
    cleared = FlowRun.objects.filter(payload_pruned_at__isnull=False)
    assert cleared.count() == 10_000 and set(cleared.values_list("status", flat=True)) == {"failed"}
    assert not cleared.exclude(body="").exists() and not cleared.filter(payload__isnull=False).exists()
    assert FlowRun.objects.filter(payload_pruned_at__isnull=True, status="succeeded").exclude(body="").count() == 23_000
    assert not NodeResult.objects.filter(run_id=old_run.id).exists()
    # The counters remember what was deleted.
    f = str(flow.id)
    assert MetricCounter.objects.get(name="langrun_runs_accepted_total", labels=f'{{"flow": "{f}"}}').value == 64_000
    assert elapsed < 120, elapsed


def test_prune_batches_are_bounded(flow, user, django_assert_max_num_queries):
    _bulk(flow, user, status="succeeded", days_old=40, n=25)
    with CaptureDeletes() as deletes:
        assert runs_prune(batch=10, payload_days=0, tasks_days=0).succeeded_runs == 25
    assert deletes.sizes == [10, 10, 5]


class CaptureDeletes:
    """Records the size of each batch deleted from the ledger, from the SQL sent."""

    def __enter__(self):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        self.ctx = CaptureQueriesContext(connection)
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)
        self.sizes = [
            q["sql"].count("%s") or q["sql"].count(",") + 1
            for q in self.ctx.captured_queries
            if q["sql"].startswith('DELETE FROM "flows_flowrun"')
        ]


def test_zero_days_keeps_forever(flow, user):
    _bulk(flow, user, status="succeeded", days_old=3000, n=3)
    _bulk(flow, user, status="failed", days_old=3000, n=3)
    result = runs_prune(succeeded_days=0, failed_days=0, payload_days=0)
    assert (result.succeeded_runs, result.failed_runs, result.payloads_cleared) == (0, 0, 0)
    assert FlowRun.objects.count() == 6


def test_replay_of_a_run_whose_payload_was_cleared_is_refused(flow, user):
    run = _bulk(flow, user, status="failed", days_old=40, n=1)
    FlowRun.objects.filter(pk=run.pk).update(request={"method": "POST", "headers": {}, "query": {"a": "1"}})
    runs_prune()
    run.refresh_from_db()
    assert run.payload_pruned_at is not None and run.payload is None and run.request is None
    with pytest.raises(RunPayloadPruned):
        flow_run_replay(run=run, user=user)


def test_queue_tables_are_pruned(db):
    old = timezone.now() - 30 * DAY
    Task.objects.create(id="a" * 32, name="old", func="x", started=old, stopped=old, success=False)
    Task.objects.create(id="b" * 32, name="new", func="x", started=timezone.now(), stopped=timezone.now(), success=False)
    OrmQ.objects.create(key="langrun", payload="x", lock=old)
    OrmQ.objects.create(key="langrun", payload="y", lock=timezone.now())
    result = runs_prune()
    assert (result.queue_tasks, result.queue_leftovers) == (1, 1)
    assert list(Task.objects.values_list("name", flat=True)) == ["new"]
    assert list(OrmQ.objects.values_list("payload", flat=True)) == ["y"]


def test_prune_command_and_dry_run(flow, user):
    _bulk(flow, user, status="succeeded", days_old=40, n=4)
    out = StringIO()
    call_command("prune_runs", "--dry-run", stdout=out)
    assert "Would delete 4 succeeded run(s)" in out.getvalue()
    assert FlowRun.objects.count() == 4
    out = StringIO()
    call_command("prune_runs", "--succeeded-days", "50", stdout=out)
    assert "Deleted 0 succeeded" in out.getvalue()
    call_command("prune_runs", stdout=StringIO())
    assert FlowRun.objects.count() == 0


def test_daily_schedule_is_installed_by_migrate(db):
    schedule = Schedule.objects.get(name=PRUNE_SCHEDULE_NAME)
    assert (schedule.func, schedule.schedule_type, schedule.repeats) == ("flows.tasks.prune", Schedule.DAILY, -1)


def test_prune_task_runs_the_retention(flow, user):
    from flows import tasks

    _bulk(flow, user, status="succeeded", days_old=40, n=2)
    assert tasks.prune()["succeeded_runs"] == 2


def test_a_run_finished_by_a_worker_whose_clock_runs_behind_is_pruned_all_the_same(flow, user):
    # Received at 12:10 by the web's clock, finished at 12:00 by the worker's.
    _bulk(flow, user, status="succeeded", days_old=40, n=3, received_before=-timedelta(minutes=10))
    assert runs_prune(succeeded_days=30, failed_days=0, payload_days=0, tasks_days=0, batch=2).succeeded_runs == 3
    assert not FlowRun.objects.exists()


def _ledger_tuples_read() -> int:
    """Rows of the run ledger this transaction read, by sequential and index scans (PostgreSQL's own count)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables WHERE relname = %s",
            [FlowRun._meta.db_table],
        )
        return cursor.fetchone()[0]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the rows a scan read are PostgreSQL's statistics")
def test_each_batch_goes_on_where_the_last_stopped_instead_of_rereading_the_ledger(flow, user):
    # Old runs retention keeps (failures kept forever, payloads cleared last week) come first in the ledger.
    # A batch that started again from the beginning would read all of them again: 3,000 rows x 10 batches
    # per pass. Going on from the last batch's key, a pass reads them once.
    _bulk(flow, user, status="failed", days_old=60, n=3000, payload_pruned_at=timezone.now() - 7 * DAY)
    _bulk(flow, user, status="succeeded", days_old=40, n=200)
    _bulk(flow, user, status="failed", days_old=10, n=200)
    _bulk(flow, user, status="succeeded", days_old=1, n=500)
    table = FlowRun._meta.db_table
    with connection.cursor() as cursor:
        # Each copy received a millisecond apart, as real runs are (the copies share their template's time).
        cursor.execute(
            f"UPDATE {table} AS r SET received_at = r.received_at - make_interval(secs => n.i / 1000.0) "  # noqa: S608 - the model's table
            f"FROM (SELECT id, row_number() OVER () AS i FROM {table}) AS n WHERE n.id = r.id"
        )
        cursor.execute(f"ANALYZE {table}")  # as autovacuum would have, on a ledger this size
    before = _ledger_tuples_read()
    result = runs_prune(succeeded_days=30, failed_days=0, payload_days=7, tasks_days=0, batch=20)
    read = _ledger_tuples_read() - before
    assert (result.succeeded_runs, result.failed_runs, result.payloads_cleared) == (200, 0, 200)
    assert FlowRun.objects.count() == 3700
    # Two passes over the 3,400 rows before their cutoffs, and the 400 runs acted on fetched again by key.
    assert read < 2 * 3400 + 2 * 400 + 1000, read


def _waiting_on_locks(count: int) -> bool:
    """Whether `count` other connections wait on a row lock (PostgreSQL), within 5 s."""
    for _ in range(100):
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
            if cursor.fetchone()[0] >= count:
                return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite's write lock keeps the delete and the batch apart")
@pytest.mark.django_db(transaction=True)
def test_a_replay_batch_and_retentions_delete_of_the_same_runs_do_not_deadlock(flow, user, monkeypatch):
    # Retention deleted a batch's runs in the order of its plan (a large batch's is the table's), a replay batch locked
    # the same runs by id: each held one the other wanted, PostgreSQL aborted one, and the replay job failed.
    import threading

    from django.db import transaction

    from flows.models import ReplayJob
    from flows.services import replays
    from flows.services.replays import replay_job_create, replay_job_step

    monkeypatch.setattr(replays, "_step_later", lambda **kwargs: None)
    while True:  # the run with the larger id first in the table, so that the table's order is not the ids'
        runs = [_bulk(flow, user, status="failed", days_old=60, n=1) for _ in range(2)]
        if runs[0].pk > runs[1].pk:
            break
        FlowRun.objects.all().delete()
    first = min(runs, key=lambda r: r.pk)
    job = replay_job_create(user=user, filters={"status": "failed"})
    outcomes, held, release = {}, threading.Event(), threading.Event()

    def in_thread(name, call):
        def run():
            try:
                outcomes[name] = call()
            except Exception as exc:  # noqa: BLE001 - the outcome is the test's
                outcomes[name] = exc
            finally:
                connection.close()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def referrer():
        # Another writer referring to the first run (its foreign key's check): it keeps a delete from the row a moment,
        # not a replay's lock.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {FlowRun._meta.db_table} WHERE id = %s FOR KEY SHARE", [first.pk])  # noqa: S608
            held.set()
            release.wait(10)

    def prune():
        with connection.cursor() as cursor:  # a large batch's plan: the rows in the table's order
            cursor.execute("SET enable_indexscan = off; SET enable_bitmapscan = off")
        return runs_prune(succeeded_days=0, failed_days=30, payload_days=0, tasks_days=0)

    threads = [in_thread("referrer", referrer)]
    assert held.wait(5)
    threads.append(in_thread("prune", prune))
    assert _waiting_on_locks(1)
    threads.append(in_thread("replay", lambda: replay_job_step(job_id=job.pk)))
    _waiting_on_locks(2)  # the replay waits for the delete's row, or already got both before it
    release.set()
    for thread in threads:
        thread.join(20)
    assert not isinstance(outcomes["prune"], Exception), outcomes["prune"]
    assert outcomes["prune"].failed_runs == 2 and not FlowRun.objects.filter(pk__in=[r.pk for r in runs]).exists()
    job = ReplayJob.objects.get(pk=job.pk)
    assert (job.status, job.error, job.created + job.failed) == ("succeeded", "", 2), job.errors
