"""Prompt authors run their prompts in the admin's playground (decision 0036): a paid model call,
so a permission of its own, granted to the group that writes prompts and not to release managers.
"""

from django.contrib.auth.management import create_permissions
from django.contrib.contenttypes.management import create_contenttypes
from django.db import migrations

GROUP = "Prompt authors"
CODENAMES = ("run_playground",)


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
        ("runs", "0006_calls_from_the_playground"),
        ("registry", "0003_prompt_authors_group"),
    ]
    operations = [migrations.RunPython(forward, reverse)]
