"""Prompt authors remove cases one at a time in the admin (issue 13, item 8), as they already
could by importing with replace. Removing a case no longer costs the history that 0002 kept
deleting from authors for: eval results keep the case's key and what it was scored on (0008,
docs/decisions/0021). Permissions exist by now (0002 created them).
"""

from django.db import migrations

GROUP = "Prompt authors"
CODENAMES = ("delete_case",)


def forward(apps, schema_editor) -> None:
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
        ("evaluations", "0008_eval_results_keep_the_case_they_scored"),
    ]
    operations = [migrations.RunPython(forward, reverse)]
