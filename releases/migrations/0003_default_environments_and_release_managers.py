"""Default environments (development -> staging -> production) and the "Release managers" group.

Release managers change releases (deploy, canary, experiment, shadow, rollback) and read prompts;
they cannot change prompt content. Prompt authors (registry 0003) are the mirror image.
"""

from django.contrib.auth.management import create_permissions
from django.contrib.contenttypes.management import create_contenttypes
from django.db import migrations

ENVIRONMENTS = [
    ("development", 10, False, "Where authors try their drafts' committed versions."),
    ("staging", 20, False, "Pre-production: what is about to ship."),
    ("production", 30, True, "Takes only versions that have been stable in staging."),
]
GROUP = "Release managers"
PERMISSIONS = {
    "releases": {
        "release": ["view", "change", "deploy", "rollback"],
        "releaseevent": ["view"],
        "environment": ["view"],
    },
    "registry": {
        "prompt": ["view"],
        "promptversion": ["view"],
        "variable": ["view"],
        "localizedtemplate": ["view"],
    },
}


def forward(apps, schema_editor) -> None:
    Environment = apps.get_model("releases", "Environment")
    for name, position, requires_previous, description in ENVIRONMENTS:
        Environment.objects.get_or_create(
            name=name,
            defaults={
                "position": position,
                "requires_previous_stable": requires_previous,
                "description": description,
            },
        )
    for label in PERMISSIONS:
        config = apps.get_app_config(label)
        config.models_module = True  # create_* skip app configs without models
        create_contenttypes(config, apps=apps, verbosity=0)
        create_permissions(config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    wanted = []
    for label, models in PERMISSIONS.items():
        for model, actions in models.items():
            for action in actions:
                codename = f"{action}_{model}"
                wanted.append(
                    Permission.objects.get(content_type__app_label=label, codename=codename)
                )
    group.permissions.set(wanted)


def reverse(apps, schema_editor) -> None:
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("releases", "0002_release_events_are_append_only"),
        ("registry", "0003_prompt_authors_group"),
    ]
    operations = [migrations.RunPython(forward, reverse)]
