"""Migrations: the versions backfill gives every existing flow a version 1; run foreign keys keep one index each."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


@pytest.mark.django_db(transaction=True)
def test_backfill_creates_version_one_and_links_runs():
    executor = MigrationExecutor(connection)
    executor.migrate([("flows", "0003_run_tweaks")])
    old = executor.loader.project_state([("flows", "0003_run_tweaks")]).apps
    User = old.get_model("langrun", "User")
    Flow = old.get_model("flows", "Flow")
    FlowRun = old.get_model("flows", "FlowRun")
    owner = User.objects.create(username="old-timer")
    flow = Flow.objects.create(user=owner, name="Old", data={"nodes": [{"id": "hook", "type": "Webhook"}], "edges": []})
    FlowRun.objects.create(flow=flow, user=owner, payload={})

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    from flows.models import FlowRun as Run
    from flows.models import FlowVersion

    [version] = FlowVersion.objects.filter(flow_id=flow.id)
    assert (version.number, version.data, version.author_id) == (1, flow.data, owner.id)
    assert set(Run.objects.filter(flow_id=flow.id).values_list("version_id", flat=True)) == {version.id}


@pytest.mark.parametrize(
    ("table", "column"), [("flows_flowrun", "flow_id"), ("flows_noderesult", "run_id"), ("flows_runattempt", "run_id")]
)
def test_run_foreign_keys_are_served_by_a_composite_index_only(db, table, column):
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    indexes = [c["columns"] for c in constraints.values() if c["index"] or c["unique"]]
    assert [column] not in indexes  # a second index on the same leading column only costs writes
    assert any(columns[0] == column and len(columns) > 1 for columns in indexes)


def test_upgrading_grants_flow_builders_the_newer_owner_scoped_models(db, make_user):
    from importlib import import_module

    from django.apps import apps
    from django.contrib.auth.models import Group

    migration = import_module("flows.migrations.0023_flow_builders_newer_models")
    group = Group.objects.get(name="Flow builders")
    newer = group.permissions.filter(content_type__model__in=["flowschedule", "replayjob", "ingesttoken"])
    migration.revoke(apps, None)
    assert not newer.exists()
    builder = make_user(is_staff=True)
    builder.groups.add(group)
    migration.grant(apps, None)
    assert newer.count() == 12
    assert builder.has_perms(["webhooks.add_ingesttoken", "flows.change_flowschedule", "flows.view_replayjob"])


def test_upgrading_takes_schedules_that_cannot_fire_off_the_scheduler(db, make_flow, user):
    # Stored before crons were checked: they would stop django-q2's scheduler for every schedule.
    from importlib import import_module

    from django.apps import apps
    from django_q.models import Schedule

    from flows.models import FlowSchedule
    from flows.services.schedules import flow_schedule_create

    flow = make_flow(user, endpoint_name="clock")
    good = flow_schedule_create(flow=flow, cron="*/5 * * * *")
    stuck = []
    for cron in ("0 0 30 2 *", "8 11 7 12 * 0 2026", "0 0 1 1 * 0"):
        schedule = flow_schedule_create(flow=flow, cron="*/5 * * * *")
        FlowSchedule.objects.filter(pk=schedule.pk).update(cron=cron)
        stuck.append(schedule)
    import_module("flows.migrations.0024_unschedule_crons_that_cannot_fire").unschedule(apps, None)
    assert FlowSchedule.objects.get(pk=good.pk).q_schedule_id is not None
    assert all(FlowSchedule.objects.get(pk=s.pk).q_schedule_id is None for s in stuck)
    assert set(Schedule.objects.filter(name__startswith="flow-schedule-").values_list("name", flat=True)) == {f"flow-schedule-{good.pk}"}
