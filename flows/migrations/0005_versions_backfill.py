from django.db import migrations


def backfill(apps, schema_editor):
    """Version 1 of every existing flow is its current graph; existing runs point at it."""
    Flow = apps.get_model("flows", "Flow")
    FlowVersion = apps.get_model("flows", "FlowVersion")
    FlowRun = apps.get_model("flows", "FlowRun")
    for flow in Flow.objects.filter(versions__isnull=True).iterator():
        version = FlowVersion.objects.create(flow=flow, number=1, data=flow.data, author_id=flow.user_id, message="Initial version")
        FlowRun.objects.filter(flow=flow, version__isnull=True).update(version=version)


class Migration(migrations.Migration):
    dependencies = [
        ("flows", "0004_engine_reliability_versions"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
