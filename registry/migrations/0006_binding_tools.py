"""A binding's tools (registry.tools; decision 0033), protected like the rest of a committed
version: the immutability trigger of migration 0002 lists the columns an UPDATE may not touch, so
it is created again with the three new ones. On SQLite every immutability trigger is dropped
first and written again after: adding a column with a default rebuilds the table, which SQLite
refuses while a trigger names it."""

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


CHILD_TABLES = ("registry_variable", "registry_localizedtemplate")
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS registry_promptversion_immutable",
    *(f"DROP TRIGGER IF EXISTS {table}_insert_immutable" for table in CHILD_TABLES),
    *(f"DROP TRIGGER IF EXISTS {table}_update_immutable" for table in CHILD_TABLES),
]


def _sqlite(columns: str) -> list[str]:
    """Every immutability trigger as migration 0002 wrote it, with ``columns`` protected."""
    return [
        *SQLITE_DROP,
        f"""
        CREATE TRIGGER registry_promptversion_immutable
        BEFORE UPDATE OF {columns} ON registry_promptversion
        FOR EACH ROW WHEN OLD.status = 'committed'
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END
        """,
        *(
            f"""
            CREATE TRIGGER {table}_insert_immutable BEFORE INSERT ON {table}
            FOR EACH ROW WHEN
                (SELECT status FROM registry_promptversion WHERE id = NEW.version_id) = 'committed'
            BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END
            """
            for table in CHILD_TABLES
        ),
        *(
            f"""
            CREATE TRIGGER {table}_update_immutable BEFORE UPDATE ON {table}
            FOR EACH ROW WHEN
                (SELECT status FROM registry_promptversion WHERE id = OLD.version_id) = 'committed'
                OR (SELECT status FROM registry_promptversion WHERE id = NEW.version_id)
                = 'committed'
            BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END
            """
            for table in CHILD_TABLES
        ),
    ]


def _execute(schema_editor, statements: list[str]) -> None:
    # A cursor, not schema_editor.execute(): see migration 0002.
    with schema_editor.connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def _vendor(schema_editor) -> str:
    vendor = schema_editor.connection.vendor
    if vendor not in ("postgresql", "sqlite"):
        raise RuntimeError(f"No immutability triggers written for {vendor}.")
    return vendor


def before_columns(apps, schema_editor) -> None:
    """SQLite rebuilds the table to add a column with a default, and refuses to while triggers
    name it: they are dropped first (PostgreSQL adds columns in place)."""
    if _vendor(schema_editor) == "sqlite":
        _execute(schema_editor, SQLITE_DROP)


def restore_old(apps, schema_editor) -> None:
    if _vendor(schema_editor) == "sqlite":
        _execute(schema_editor, _sqlite(OLD_COLUMNS))


def after_columns(apps, schema_editor) -> None:
    vendor = _vendor(schema_editor)
    _execute(schema_editor, (_sqlite if vendor == "sqlite" else _postgres)(NEW_COLUMNS))


def before_removal(apps, schema_editor) -> None:
    if _vendor(schema_editor) == "sqlite":
        _execute(schema_editor, SQLITE_DROP)
    else:
        _execute(schema_editor, _postgres(OLD_COLUMNS))


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0005_variable_messages_type_and_place"),
    ]

    operations = [
        migrations.RunPython(before_columns, restore_old, elidable=False),
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
        migrations.RunPython(after_columns, before_removal, elidable=False),
    ]
