"""A binding's tools (registry.tools; decision 0033), protected like the rest of a committed
version: the immutability trigger of migration 0002 lists the columns an UPDATE may not touch, so
it is created again with the three new ones (and, on SQLite, re-created at all: adding a column
with a default rebuilds the table, which drops its triggers)."""

from django.db import migrations, models

OLD_COLUMNS = (
    "prompt_id, number, status, message, parent_id, content_hash, provider, model_name, "
    "parameters, response_schema, fallbacks, author_label, committed_by_label, created_at, "
    "committed_at"
)
NEW_COLUMNS = OLD_COLUMNS + ", tools, tool_choice, parallel_tool_calls"
MESSAGE = "a committed prompt version is immutable"


def _postgres(columns: str) -> list[str]:
    return [
        "DROP TRIGGER IF EXISTS registry_promptversion_immutable ON registry_promptversion",
        f"""
        CREATE TRIGGER registry_promptversion_immutable
        BEFORE UPDATE OF {columns} ON registry_promptversion
        FOR EACH ROW WHEN (OLD.status = 'committed')
        EXECUTE FUNCTION registry_refuse_committed_version_change()
        """,
    ]


def _sqlite(columns: str) -> list[str]:
    return [
        "DROP TRIGGER IF EXISTS registry_promptversion_immutable",
        f"""
        CREATE TRIGGER registry_promptversion_immutable
        BEFORE UPDATE OF {columns} ON registry_promptversion
        FOR EACH ROW WHEN OLD.status = 'committed'
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END
        """,
    ]


STATEMENTS = {"postgresql": _postgres, "sqlite": _sqlite}


def _run(schema_editor, columns: str) -> None:
    vendor = schema_editor.connection.vendor
    if vendor not in STATEMENTS:
        raise RuntimeError(f"No immutability triggers written for {vendor}.")
    with schema_editor.connection.cursor() as cursor:
        for statement in STATEMENTS[vendor](columns):
            cursor.execute(statement)


def forward(apps, schema_editor) -> None:
    _run(schema_editor, NEW_COLUMNS)


def reverse(apps, schema_editor) -> None:
    _run(schema_editor, OLD_COLUMNS)


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0004_identifiers_match_whole"),
    ]

    operations = [
        # Reversed last, after the columns are gone (which on SQLite drops the trigger again).
        migrations.RunPython(migrations.RunPython.noop, reverse, elidable=False),
        migrations.AddField(
            model_name="promptversion",
            name="parallel_tool_calls",
            field=models.BooleanField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="promptversion",
            name="tool_choice",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="promptversion",
            name="tools",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.RunPython(forward, migrations.RunPython.noop, elidable=False),
    ]
