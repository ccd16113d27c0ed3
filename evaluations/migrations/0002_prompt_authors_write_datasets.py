"""Prompt authors attach golden sets to their prompts: add, change and view datasets and cases.

Deleting stays with superusers: a case's key is what eval reports compare across runs. Permissions
are created by ``post_migrate``, after every migration, so this migration creates the ones it
needs first.
"""

from django.contrib.auth.management import create_permissions
from django.contrib.contenttypes.management import create_contenttypes
from django.db import migrations

GROUP = "Prompt authors"
CODENAMES = (
    "add_dataset",
    "change_dataset",
    "view_dataset",
    "add_case",
    "change_case",
    "view_case",
)


def forward(apps, schema_editor) -> None:
    config = apps.get_app_config("evaluations")
    config.models_module = True  # create_* skip app configs without models
    create_contenttypes(config, apps=apps, verbosity=0)
    create_permissions(config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    perms = Permission.objects.filter(content_type__app_label="evaluations", codename__in=CODENAMES)
    if perms.count() != len(CODENAMES):
        raise RuntimeError(f"Missing permissions for {GROUP}: expected {CODENAMES}")
    group.permissions.add(*perms)


def reverse(apps, schema_editor) -> None:
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group in Group.objects.filter(name=GROUP):
        group.permissions.remove(
            *Permission.objects.filter(
                content_type__app_label="evaluations", codename__in=CODENAMES
            )
        )


class Migration(migrations.Migration):
    dependencies = [
        ("evaluations", "0001_initial"),
        ("registry", "0003_prompt_authors_group"),
    ]
    operations = [migrations.RunPython(forward, reverse)]
