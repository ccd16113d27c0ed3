"""Release managers may release past a failing promotion gate, with a reason (audited)."""

from django.contrib.auth.management import create_permissions
from django.contrib.contenttypes.management import create_contenttypes
from django.db import migrations

GROUP = "Release managers"
CODENAME = "override_gates"


def forward(apps, schema_editor) -> None:
    config = apps.get_app_config("releases")
    config.models_module = True  # create_* skip app configs without models
    create_contenttypes(config, apps=apps, verbosity=0)
    create_permissions(config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    group.permissions.add(
        Permission.objects.get(content_type__app_label="releases", codename=CODENAME)
    )


def reverse(apps, schema_editor) -> None:
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group in Group.objects.filter(name=GROUP):
        group.permissions.remove(
            *Permission.objects.filter(content_type__app_label="releases", codename=CODENAME)
        )


class Migration(migrations.Migration):
    dependencies = [("releases", "0005_gate_overrides_and_planned_experiments")]
    operations = [migrations.RunPython(forward, reverse)]
