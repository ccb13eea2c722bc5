"""Drops every ``customersync_owner_*`` PL/pgSQL function in the schemas on the search path (one
per owner mapping, made by ``migrate`` in releases that had them): nothing calls them, owner
saves go through the ORM. A no-op on other databases, which never had them."""

from django.db import migrations

DROP_OWNER_FUNCTIONS = """
DO $customersync$
DECLARE
    found regprocedure;
BEGIN
    FOR found IN
        SELECT p.oid::regprocedure
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE starts_with(p.proname, 'customersync_owner_') AND n.nspname = ANY (current_schemas(false))
    LOOP
        EXECUTE 'DROP FUNCTION ' || found::text;
    END LOOP;
END
$customersync$
"""


def drop_owner_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_OWNER_FUNCTIONS, None)


class Migration(migrations.Migration):
    dependencies = [
        ("customersync", "0005_sync_version"),
    ]

    operations = [
        migrations.RunPython(drop_owner_functions, migrations.RunPython.noop, elidable=True),
    ]
