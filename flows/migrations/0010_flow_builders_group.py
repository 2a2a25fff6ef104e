"""The "Flow builders" group: the permissions a staff user needs to manage their own objects in the admin.

The admin used to let any staff user manage their own flows, runs, versions, variables and API keys without
permissions; it now honours Django's permissions. Every staff user who is not a superuser joins this group, so an
upgrade takes nothing away from anyone; a new staff user is added to it (or given narrower permissions) by hand.
"""

from django.db import migrations

GROUP = "Flow builders"
MODELS = {"flows": ["flow", "flowrun", "flowversion", "variable"], "langrun": ["apikey"]}


def create_group(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Django creates permissions after the last migration; this group needs them now.
    for label in MODELS:
        config = apps.get_app_config(label)
        previous = getattr(config, "models_module", None)
        config.models_module = previous or True
        try:
            create_permissions(config, apps=apps, verbosity=0)
        finally:
            config.models_module = previous
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    User = apps.get_model("langrun", "User")
    group, _ = Group.objects.get_or_create(name=GROUP)
    for label, models in MODELS.items():
        group.permissions.add(*Permission.objects.filter(content_type__app_label=label, content_type__model__in=models))
    for user in User.objects.filter(is_staff=True, is_superuser=False):
        user.groups.add(group)


def delete_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("flows", "0009_run_index_unfinished_only"),
        ("langrun", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_group, delete_group)]
