"""Calls run in the admin's playground get a source of their own, and running the playground a
permission of its own (decision 0036)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0005_identifiers_match_whole"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="call",
            options={
                "ordering": ["-created_at", "-id"],
                "permissions": [("run_playground", "Can run prompts in the playground")],
            },
        ),
        migrations.AlterField(
            model_name="call",
            name="source",
            field=models.CharField(
                choices=[
                    ("run", "Run by the registry"),
                    ("reported", "Reported by a service"),
                    ("playground", "Run in the playground"),
                ],
                max_length=10,
            ),
        ),
    ]
