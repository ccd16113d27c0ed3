"""A binding's guardrail policy (decision 0052), protected like the rest of a committed version,
as the response cache's was in 0009: the immutability trigger is created again with
``guardrails`` among its columns.
"""

from django.db import migrations, models

OLD_COLUMNS = (
    "prompt_id, number, status, message, parent_id, content_hash, provider, model_name, "
    "parameters, response_schema, fallbacks, author_label, committed_by_label, created_at, "
    "committed_at, tools, tool_choice, parallel_tool_calls, cache"
)
NEW_COLUMNS = OLD_COLUMNS + ", guardrails"
MESSAGE = "a committed prompt version is immutable"


def _statements(vendor: str, columns: str) -> list[str]:
    if vendor == "postgresql":
        return [
            "DROP TRIGGER IF EXISTS registry_promptversion_immutable ON registry_promptversion",
            f"""
            CREATE TRIGGER registry_promptversion_immutable
            BEFORE UPDATE OF {columns} ON registry_promptversion
            FOR EACH ROW WHEN (OLD.status = 'committed')
            EXECUTE FUNCTION registry_refuse_committed_version_change()
            """,
        ]
    if vendor == "sqlite":
        return [
            "DROP TRIGGER IF EXISTS registry_promptversion_immutable",
            f"""
            CREATE TRIGGER registry_promptversion_immutable
            BEFORE UPDATE OF {columns} ON registry_promptversion
            FOR EACH ROW WHEN OLD.status = 'committed'
            BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END
            """,
        ]
    raise RuntimeError(f"No immutability triggers written for {vendor}.")


def _execute(schema_editor, columns: str) -> None:
    # A cursor, not schema_editor.execute(): see migration 0002.
    with schema_editor.connection.cursor() as cursor:
        for statement in _statements(schema_editor.connection.vendor, columns):
            cursor.execute(statement)


def forward(apps, schema_editor) -> None:
    _execute(schema_editor, NEW_COLUMNS)


def reverse(apps, schema_editor) -> None:
    _execute(schema_editor, OLD_COLUMNS)


class Migration(migrations.Migration):
    dependencies = [("registry", "0009_binding_cache")]

    operations = [
        migrations.AddField(
            model_name="promptversion",
            name="guardrails",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.RunPython(forward, reverse, elidable=False),
    ]
