"""The "Flow builders" group also covers the owner-scoped admin pages added after it: schedules, replay jobs, ingest tokens.

The group grants everything on one's own objects (0010); the admin scopes these pages by owner as it does the others.
tests/langrun/test_admin.py checks that every owner-scoped admin page's model is in the group.
"""

from django.db import migrations

GROUP = "Flow builders"
MODELS = {"flows": ["flowschedule", "replayjob"], "webhooks": ["ingesttoken"]}


def _permissions(apps):
    from django.contrib.auth.management import create_permissions

    # Django creates permissions after the last migration; the group needs them now.
    for label in MODELS:
        config = apps.get_app_config(label)
        previous = getattr(config, "models_module", None)
        config.models_module = previous or True
        try:
            create_permissions(config, apps=apps, verbosity=0)
        finally:
            config.models_module = previous
    Permission = apps.get_model("auth", "Permission")
    return [p for label, models in MODELS.items() for p in Permission.objects.filter(content_type__app_label=label, content_type__model__in=models)]


def grant(apps, schema_editor):
    # A site that deleted the group chose to manage permissions otherwise: it is not made again.
    group = apps.get_model("auth", "Group").objects.filter(name=GROUP).first()
    if group is not None:
        group.permissions.add(*_permissions(apps))


def revoke(apps, schema_editor):
    group = apps.get_model("auth", "Group").objects.filter(name=GROUP).first()
    if group is not None:
        group.permissions.remove(*_permissions(apps))


class Migration(migrations.Migration):
    dependencies = [
        ("flows", "0022_flow_response"),
        ("webhooks", "0002_ingest_tokens"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
