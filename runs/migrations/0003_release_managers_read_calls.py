"""Release managers read call records and shadow runs (the calls list and the shadow report)."""

from django.contrib.auth.management import create_permissions
from django.contrib.contenttypes.management import create_contenttypes
from django.db import migrations

GROUP = "Release managers"
CODENAMES = ("view_call", "view_shadowrun")


def forward(apps, schema_editor) -> None:
    config = apps.get_app_config("runs")
    config.models_module = True  # create_* skip app configs without models
    create_contenttypes(config, apps=apps, verbosity=0)
    create_permissions(config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label="runs", codename__in=CODENAMES)
    )


def reverse(apps, schema_editor) -> None:
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group in Group.objects.filter(name=GROUP):
        group.permissions.remove(
            *Permission.objects.filter(content_type__app_label="runs", codename__in=CODENAMES)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0002_calls_and_shadow_runs"),
        ("releases", "0003_default_environments_and_release_managers"),
    ]
    operations = [migrations.RunPython(forward, reverse)]
