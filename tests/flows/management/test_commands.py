"""Operator commands: langrun_status, requeue_runs, prune_runs (and their --help)."""

import json
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from flows import tasks
from flows.models import FlowRun
from flows.services.execution import flow_run_execute
from flows.services.runs import flow_run_create
from flows.services.sweep import flow_runs_requeue
from flows.services.variables import variable_create, variable_value

ROOT = Path(__file__).resolve().parents[3]


def run_command(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("command", "phrase"),
    [
        ("langrun_status", "queue depth"),
        ("requeue_runs", "--older-than"),
        ("prune_runs", "--dry-run"),
        ("requeue_stale_runs", "sweep"),
        ("rotate_variables_key", "first key"),
    ],
)
def test_help_text(command, phrase):
    result = subprocess.run(
        [sys.executable, "manage.py", command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "tests.settings"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert phrase in result.stdout


def _queued(flow, user, **updates):
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    if updates:
        FlowRun.objects.filter(pk=run.pk).update(**updates)
    return run


def test_status_shows_depth_last_hour_oldest_and_heartbeat(flow, user):
    old = _queued(flow, user)
    FlowRun.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(minutes=30))
    _queued(flow, user)
    done = _queued(flow, user)
    flow_run_execute(run_id=done.id)
    _queued(flow, user, status="failed", received_at=timezone.now() - timedelta(hours=2))

    status = json.loads(run_command("langrun_status", "--json"))
    assert status["queue_depth"] == 2 and status["running"] == 0
    assert status["last_hour"] == {"queued": 2, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 0, "filtered": 0}
    assert status["oldest_queued"]["run_id"] == str(old.id) and 1790 < status["oldest_queued"]["age_s"] < 1900
    assert status["last_sweep_age_s"] is None

    text = run_command("langrun_status")
    assert "Queue depth: 2 queued, 0 running" in text
    assert f"Oldest queued run: {old.id}" in text and "30 min ago" in text
    assert "no sweep has run yet" in text
    tasks.sweep()
    assert "Cluster heartbeat: last sweep 0 s ago" in run_command("langrun_status")


def test_requeue_queued_by_flow_and_age(flow, make_flow, user):
    other = make_flow(user, endpoint_name="other")
    long_ago = timezone.now() - timedelta(hours=1)
    old = _queued(flow, user, enqueued_at=long_ago)
    _queued(flow, user)  # just enqueued
    _queued(other, user, enqueued_at=long_ago)
    out = run_command("requeue_runs", "--flow", "greet", "--older-than", "600")
    assert str(old.id) in out and "enqueued again 1 queued run(s)" in out
    old.refresh_from_db()
    assert old.enqueued_at > long_ago and old.status == "queued"


def test_requeue_running_puts_dead_runs_back_and_they_run(flow, user):
    stuck = _queued(flow, user, status="running", started_at=timezone.now() - timedelta(hours=1))
    fresh = _queued(flow, user, status="running", started_at=timezone.now())
    assert "Would have requeued 1 running run(s)" in run_command("requeue_runs", "--status", "running", "--dry-run")
    assert FlowRun.objects.get(pk=stuck.pk).status == "running"
    run_command("requeue_runs", "--status", "running")
    assert FlowRun.objects.get(pk=fresh.pk).status == "running"
    assert FlowRun.objects.get(pk=stuck.pk).status == "queued"
    flow_run_execute(run_id=stuck.id)
    stuck.refresh_from_db()
    assert (stuck.status, stuck.attempts) == ("succeeded", 1)


def test_requeue_failed_replays_them(flow, user):
    failed = _queued(flow, user)
    FlowRun.objects.filter(pk=failed.pk).update(status="failed", finished_at=timezone.now())
    out = run_command("requeue_runs", "--status", "failed")
    assert "replayed 1 failed run(s)" in out
    [replay] = FlowRun.objects.filter(replay_of=failed)
    assert (replay.status, replay.trigger, replay.payload) == ("queued", "replay", {"name": "Ada"})
    assert FlowRun.objects.get(pk=failed.pk).status == "failed"


def test_requeue_unknown_flow_is_an_error(db):
    with pytest.raises(CommandError, match="No flow 'nope'"):
        run_command("requeue_runs", "--flow", "nope")


def test_requeue_refuses_other_statuses(db):
    with pytest.raises(ValueError, match="cannot be requeued"):
        flow_runs_requeue(status="succeeded")


def test_rotate_variables_key_re_encrypts_every_credential_with_the_first_key(user, make_user, settings):
    from cryptography.fernet import Fernet

    from flows.models import Variable

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.LANGRUN_VARIABLES_KEY = old
    mine = variable_create(user=user, name="TOKEN", value="alice's")
    theirs = variable_create(user=make_user("bob"), name="TOKEN", value="bob's")
    generic = variable_create(user=user, name="REGION", value="eu", kind="generic")
    settings.LANGRUN_VARIABLES_KEY = f"{new},{old}"
    out = run_command("rotate_variables_key")
    assert "Re-encrypted 2 credential(s)" in out
    settings.LANGRUN_VARIABLES_KEY = new  # the old key can now be dropped
    assert variable_value(variable=Variable.objects.get(pk=mine.pk)) == "alice's"
    assert variable_value(variable=Variable.objects.get(pk=theirs.pk)) == "bob's"
    assert Variable.objects.get(pk=generic.pk).value == "eu"


def test_rotate_variables_key_names_what_no_key_opens_and_rotates_the_rest(user, settings):
    from cryptography.fernet import Fernet

    from flows.models import Variable

    lost, old, new = (Fernet.generate_key().decode() for _ in range(3))
    settings.LANGRUN_VARIABLES_KEY = lost
    unreadable = variable_create(user=user, name="LOST", value="gone")
    settings.LANGRUN_VARIABLES_KEY = old
    readable = variable_create(user=user, name="KEPT", value="kept")
    settings.LANGRUN_VARIABLES_KEY = f"{new},{old}"
    err = StringIO()
    with pytest.raises(CommandError, match="1 credential"):
        call_command("rotate_variables_key", stdout=StringIO(), stderr=err)
    assert "LOST" in err.getvalue() and str(unreadable.pk) in err.getvalue()
    assert Variable.objects.get(pk=unreadable.pk).value == unreadable.value  # left as it was
    settings.LANGRUN_VARIABLES_KEY = new
    assert variable_value(variable=Variable.objects.get(pk=readable.pk)) == "kept"
