"""Index only the runs not yet finished, in place of every run's status.

The full (status, enqueued_at) index tempted PostgreSQL's planner into finding a run by `status` instead
of its primary key (see FlowRun.Meta). The new index is created first, so the sweep always has one; on a
large ledger, creating it reads the whole table once.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("flows", "0008_run_foreign_keys_without_redundant_indexes"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="flowrun",
            index=models.Index(
                condition=models.Q(("finished_at__isnull", True)), fields=["status", "enqueued_at"], name="flow_run_unfinished"
            ),
        ),
        migrations.RemoveIndex(
            model_name="flowrun",
            name="flows_flowr_status_8f2744_idx",
        ),
    ]
