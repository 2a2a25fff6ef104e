"""Drop the single-column indexes of three foreign keys that a composite index already leads with.

Each run writes an entry into every index of these tables per insert (and, for flows_flowrun, per
claim and finish, which change the indexed `status`). Only the indexes are dropped: Django's
AlterField would also drop and re-add the foreign key constraints, re-checking every row of the
ledger under lock.
"""

import django.db.models.deletion
from django.db import migrations, models

INDEXES = ("flows_flowrun_flow_id_9cbb3a32", "flows_noderesult_run_id_c7b2525c", "flows_runattempt_run_id_2806bbea")


class Migration(migrations.Migration):
    dependencies = [
        ("flows", "0007_flow_current_version"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(f'DROP INDEX IF EXISTS "{name}"', reverse_sql=migrations.RunSQL.noop) for name in INDEXES
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="flowrun",
                    name="flow",
                    field=models.ForeignKey(
                        db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="runs", to="flows.flow"
                    ),
                ),
                migrations.AlterField(
                    model_name="noderesult",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="node_results", to="flows.flowrun"
                    ),
                ),
                migrations.AlterField(
                    model_name="runattempt",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="attempt_log", to="flows.flowrun"
                    ),
                ),
            ],
        ),
    ]
