"""The database refuses to change or delete a release event (STYLE R5): the audit log is
append-only for every writer, not only for the service. Both vendors raise an integrity error."""

from django.db import migrations

MESSAGE = "release events are append-only"

STATEMENTS = {
    "postgresql": (
        [
            f"""
            CREATE OR REPLACE FUNCTION releases_refuse_event_change() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'integrity_constraint_violation';
            END;
            $$ LANGUAGE plpgsql
            """,
            """
            CREATE TRIGGER releases_releaseevent_append_only
            BEFORE UPDATE OR DELETE ON releases_releaseevent
            FOR EACH ROW EXECUTE FUNCTION releases_refuse_event_change()
            """,
        ],
        [
            "DROP TRIGGER IF EXISTS releases_releaseevent_append_only ON releases_releaseevent",
            "DROP FUNCTION IF EXISTS releases_refuse_event_change()",
        ],
    ),
    "sqlite": (
        [
            f"""
            CREATE TRIGGER releases_releaseevent_no_update BEFORE UPDATE ON releases_releaseevent
            BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END
            """,
            f"""
            CREATE TRIGGER releases_releaseevent_no_delete BEFORE DELETE ON releases_releaseevent
            BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END
            """,
        ],
        [
            "DROP TRIGGER IF EXISTS releases_releaseevent_no_update",
            "DROP TRIGGER IF EXISTS releases_releaseevent_no_delete",
        ],
    ),
}


def _run(schema_editor, direction: int) -> None:
    vendor = schema_editor.connection.vendor
    if vendor not in STATEMENTS:
        raise RuntimeError(f"No append-only triggers written for {vendor}.")
    # A cursor, not schema_editor.execute(), which reads '%' as a placeholder on PostgreSQL.
    with schema_editor.connection.cursor() as cursor:
        for statement in STATEMENTS[vendor][direction]:
            cursor.execute(statement)


def forward(apps, schema_editor) -> None:
    _run(schema_editor, 0)


def reverse(apps, schema_editor) -> None:
    _run(schema_editor, 1)


class Migration(migrations.Migration):
    dependencies = [("releases", "0001_initial")]
    operations = [migrations.RunPython(forward, reverse, elidable=False)]
