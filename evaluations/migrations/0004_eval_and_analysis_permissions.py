"""Who may do what with eval runs, promotion gates and canary analyses.

Prompt authors start eval runs and read them (and read the gates their versions must pass).
Release managers read eval runs, set the gates of their environments, attach analysis policies to
canaries and read their verdicts. Verdicts are never changed by hand: they are what the analysis
saw. Permissions are created by ``post_migrate``, after every migration, so this one creates the
ones it needs first.
"""

from django.contrib.auth.management import create_permissions
from django.contrib.contenttypes.management import create_contenttypes
from django.db import migrations

GRANTS = {
    "Prompt authors": (
        "add_evalrun",
        "view_evalrun",
        "view_evalresult",
        "view_promotiongate",
    ),
    "Release managers": (
        "view_evalrun",
        "view_evalresult",
        "add_promotiongate",
        "change_promotiongate",
        "delete_promotiongate",
        "view_promotiongate",
        "add_canaryanalysis",
        "change_canaryanalysis",
        "view_canaryanalysis",
        "view_canaryverdict",
    ),
}


def forward(apps, schema_editor) -> None:
    config = apps.get_app_config("evaluations")
    config.models_module = True  # create_* skip app configs without models
    create_contenttypes(config, apps=apps, verbosity=0)
    create_permissions(config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GRANTS.items():
        group, _ = Group.objects.get_or_create(name=name)
        perms = Permission.objects.filter(
            content_type__app_label="evaluations", codename__in=codenames
        )
        if perms.count() != len(codenames):
            raise RuntimeError(f"Missing permissions for {name}: expected {codenames}")
        group.permissions.add(*perms)


def reverse(apps, schema_editor) -> None:
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GRANTS.items():
        for group in Group.objects.filter(name=name):
            group.permissions.remove(
                *Permission.objects.filter(
                    content_type__app_label="evaluations", codename__in=codenames
                )
            )


class Migration(migrations.Migration):
    dependencies = [
        ("evaluations", "0003_eval_runs_gates_canary_analysis"),
        ("evaluations", "0002_prompt_authors_write_datasets"),
        ("releases", "0006_release_managers_override_gates"),
    ]
    operations = [migrations.RunPython(forward, reverse)]
