"""The database refuses to change a committed version (STYLE R5).

The service refuses first, with a friendly error; these triggers make the rule hold for every writer
(a shell, a raw ``QuerySet.update()``, a future bug). Both vendors refuse an UPDATE of a committed
version's content and any INSERT or UPDATE of its variables and templates. PostgreSQL also refuses
their DELETE; SQLite does not, because Django flushes SQLite test databases with ``DELETE FROM``
(PostgreSQL's flush is ``TRUNCATE``, which row triggers do not see). Both raise an integrity error.
"""

from django.db import migrations

# A committed version's own columns that must never change. The author/committer foreign keys are
# left out: they are SET NULL when a user is deleted, and the labels beside them keep the name.
PROTECTED_COLUMNS = (
    "prompt_id, number, status, message, parent_id, content_hash, provider, model_name, "
    "parameters, response_schema, fallbacks, author_label, committed_by_label, created_at, "
    "committed_at"
)
CHILD_TABLES = ("registry_variable", "registry_localizedtemplate")
MESSAGE = "a committed prompt version is immutable"

POSTGRES_FORWARD = [
    f"""
    CREATE OR REPLACE FUNCTION registry_refuse_committed_version_change() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION '{MESSAGE} (version %)', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END;
    $$ LANGUAGE plpgsql
    """,
    f"""
    CREATE TRIGGER registry_promptversion_immutable
    BEFORE UPDATE OF {PROTECTED_COLUMNS} ON registry_promptversion
    FOR EACH ROW WHEN (OLD.status = 'committed')
    EXECUTE FUNCTION registry_refuse_committed_version_change()
    """,
    """
    CREATE TRIGGER registry_promptversion_undeletable
    BEFORE DELETE ON registry_promptversion
    FOR EACH ROW WHEN (OLD.status = 'committed')
    EXECUTE FUNCTION registry_refuse_committed_version_change()
    """,
    f"""
    CREATE OR REPLACE FUNCTION registry_refuse_committed_content_change() RETURNS trigger AS $$
    BEGIN
        IF (TG_OP <> 'INSERT' AND EXISTS (
                SELECT 1 FROM registry_promptversion WHERE id = OLD.version_id
                AND status = 'committed'))
           OR (TG_OP <> 'DELETE' AND EXISTS (
                SELECT 1 FROM registry_promptversion WHERE id = NEW.version_id
                AND status = 'committed')) THEN
            RAISE EXCEPTION '{MESSAGE} (its variables and templates too)'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END;
    $$ LANGUAGE plpgsql
    """,
    *(
        f"""
        CREATE TRIGGER {table}_immutable
        BEFORE INSERT OR UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION registry_refuse_committed_content_change()
        """
        for table in CHILD_TABLES
    ),
]
POSTGRES_REVERSE = [
    *(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}" for table in CHILD_TABLES),
    "DROP TRIGGER IF EXISTS registry_promptversion_undeletable ON registry_promptversion",
    "DROP TRIGGER IF EXISTS registry_promptversion_immutable ON registry_promptversion",
    "DROP FUNCTION IF EXISTS registry_refuse_committed_content_change()",
    "DROP FUNCTION IF EXISTS registry_refuse_committed_version_change()",
]

SQLITE_FORWARD = [
    f"""
    CREATE TRIGGER registry_promptversion_immutable
    BEFORE UPDATE OF {PROTECTED_COLUMNS} ON registry_promptversion
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
            OR (SELECT status FROM registry_promptversion WHERE id = NEW.version_id) = 'committed'
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END
        """
        for table in CHILD_TABLES
    ),
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS registry_promptversion_immutable",
    *(f"DROP TRIGGER IF EXISTS {table}_insert_immutable" for table in CHILD_TABLES),
    *(f"DROP TRIGGER IF EXISTS {table}_update_immutable" for table in CHILD_TABLES),
]

STATEMENTS = {
    "postgresql": (POSTGRES_FORWARD, POSTGRES_REVERSE),
    "sqlite": (SQLITE_FORWARD, SQLITE_REVERSE),
}


def _run(schema_editor, direction: int) -> None:
    vendor = schema_editor.connection.vendor
    if vendor not in STATEMENTS:
        raise RuntimeError(f"No immutability triggers written for {vendor}.")
    # A cursor, not schema_editor.execute(): that one treats the '%' of RAISE's format as a
    # placeholder on PostgreSQL.
    with schema_editor.connection.cursor() as cursor:
        for statement in STATEMENTS[vendor][direction]:
            cursor.execute(statement)


def forward(apps, schema_editor) -> None:
    _run(schema_editor, 0)


def reverse(apps, schema_editor) -> None:
    _run(schema_editor, 1)


class Migration(migrations.Migration):
    dependencies = [("registry", "0001_initial")]
    operations = [migrations.RunPython(forward, reverse, elidable=False)]
