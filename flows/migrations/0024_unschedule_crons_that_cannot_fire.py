"""Schedules stored before crons were checked, whose expression django-q2 cannot compute a next firing for, are
taken off django-q2's scheduler (their `django_q.Schedule` row deleted; the FlowSchedule stays, to be corrected).

django-q2 computes every due schedule's next firing in one transaction: one expression of croniter's six or seven
fields whose year has passed, or a date that never occurs, made that fail every minute and stopped every other
schedule, other users' and the sweeps' included. A schedule whose expression is not five fields is taken off too: it
would stop them all once its year has passed.
"""

from datetime import UTC, datetime

from django.db import migrations


def cron_fires(cron: str) -> bool:
    from croniter import CroniterError, croniter

    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        return False
    try:
        croniter(cron, datetime.now(UTC)).get_next(datetime)
    except CroniterError:
        return False
    return True


def unschedule(apps, schema_editor):
    FlowSchedule = apps.get_model("flows", "FlowSchedule")
    Schedule = apps.get_model("django_q", "Schedule")
    stuck = [s.q_schedule_id for s in FlowSchedule.objects.exclude(cron="").exclude(q_schedule=None) if not cron_fires(s.cron)]
    FlowSchedule.objects.filter(q_schedule_id__in=stuck).update(q_schedule=None)
    Schedule.objects.filter(pk__in=stuck).delete()


class Migration(migrations.Migration):
    dependencies = [("flows", "0023_flow_builders_newer_models"), ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more")]

    operations = [migrations.RunPython(unschedule, migrations.RunPython.noop)]
