"""A committed version's includes are as immutable as its templates (STYLE R5, migration 0002).

``SnippetUse`` rows are written with a draft's templates and frozen with them: the same triggers as
the version's variables and templates, on both vendors, reusing 0002's PostgreSQL function.
"""

from django.db import migrations

TABLE = "registry_snippetuse"
MESSAGE = "a committed prompt version is immutable"

POSTGRES_FORWARD = [
    f"""
    CREATE TRIGGER {TABLE}_immutable
    BEFORE INSERT OR UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION registry_refuse_committed_content_change()
    """,
]
POSTGRES_REVERSE = [f"DROP TRIGGER IF EXISTS {TABLE}_immutable ON {TABLE}"]

SQLITE_FORWARD = [
    f"""
    CREATE TRIGGER {TABLE}_insert_immutable BEFORE INSERT ON {TABLE}
    FOR EACH ROW WHEN
        (SELECT status FROM registry_promptversion WHERE id = NEW.version_id) = 'committed'
    BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END
    """,
    f"""
    CREATE TRIGGER {TABLE}_update_immutable BEFORE UPDATE ON {TABLE}
    FOR EACH ROW WHEN
        (SELECT status FROM registry_promptversion WHERE id = OLD.version_id) = 'committed'
        OR (SELECT status FROM registry_promptversion WHERE id = NEW.version_id) = 'committed'
    BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END
    """,
]
SQLITE_REVERSE = [
    f"DROP TRIGGER IF EXISTS {TABLE}_insert_immutable",
    f"DROP TRIGGER IF EXISTS {TABLE}_update_immutable",
]

STATEMENTS = {
    "postgresql": (POSTGRES_FORWARD, POSTGRES_REVERSE),
    "sqlite": (SQLITE_FORWARD, SQLITE_REVERSE),
}


def _run(schema_editor, direction: int) -> None:
    vendor = schema_editor.connection.vendor
    if vendor not in STATEMENTS:
        raise RuntimeError(f"No immutability triggers written for {vendor}.")
    with schema_editor.connection.cursor() as cursor:
        for statement in STATEMENTS[vendor][direction]:
            cursor.execute(statement)


def forward(apps, schema_editor) -> None:
    _run(schema_editor, 0)


def reverse(apps, schema_editor) -> None:
    _run(schema_editor, 1)


class Migration(migrations.Migration):
    dependencies = [("registry", "0007_snippets")]
    operations = [migrations.RunPython(forward, reverse, elidable=False)]
