"""The "Prompt authors" group: write prompts and drafts, commit them; nothing else (STYLE R13).

Permissions are created by ``post_migrate``, after every migration, so this migration creates the
ones it needs first.
"""

from django.contrib.auth.management import create_permissions
from django.contrib.contenttypes.management import create_contenttypes
from django.db import migrations

GROUP = "Prompt authors"
PERMISSIONS = [
    ("prompt", ["add", "change", "view"]),
    ("promptversion", ["add", "change", "delete", "view", "commit"]),
    ("variable", ["add", "change", "delete", "view"]),
    ("localizedtemplate", ["add", "change", "delete", "view"]),
]


def forward(apps, schema_editor) -> None:
    config = apps.get_app_config("registry")
    config.models_module = True  # create_* skip app configs without models
    create_contenttypes(config, apps=apps, verbosity=0)
    create_permissions(config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    codenames = [f"{action}_{model}" for model, actions in PERMISSIONS for action in actions]
    perms = Permission.objects.filter(content_type__app_label="registry", codename__in=codenames)
    if perms.count() != len(codenames):
        raise RuntimeError(f"Missing permissions for {GROUP}: expected {codenames}")
    group.permissions.set(perms)


def reverse(apps, schema_editor) -> None:
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0002_committed_versions_are_immutable"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(forward, reverse)]
