"""The migration that drops the ``customersync_owner_*`` functions a PostgreSQL database may hold."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.db import connection

pytestmark = pytest.mark.django_db

drop = importlib.import_module("customersync.migrations.0006_drop_owner_functions").drop_owner_functions


def owner_functions() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT proname FROM pg_proc WHERE starts_with(proname, 'customersync_owner_') ORDER BY 1")
        return [name for (name,) in cursor.fetchall()]


class Recorder:
    """A schema editor that records what it is asked to run."""

    connection = connection

    def __init__(self) -> None:
        self.executed: list[str] = []

    def execute(self, sql: str, params: object = ()) -> None:
        self.executed.append(sql)


def test_drops_every_owner_function_and_nothing_else_on_postgresql_and_is_a_no_op_elsewhere():
    if connection.vendor != "postgresql":
        editor = Recorder()
        drop(apps, editor)
        assert editor.executed == []
        return
    with connection.schema_editor(atomic=False) as editor:
        for name, args in (("customersync_owner_0a1b2c3d4e5f", "integer, jsonb"), ("customersync_owner_x", "text")):
            editor.execute(f"CREATE FUNCTION {name}({args}) RETURNS integer LANGUAGE sql AS 'SELECT 1'", None)
        editor.execute("CREATE FUNCTION customersync_other() RETURNS integer LANGUAGE sql AS 'SELECT 1'", None)
        assert owner_functions() == ["customersync_owner_0a1b2c3d4e5f", "customersync_owner_x"]
        drop(apps, editor)
    assert owner_functions() == []
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regproc('customersync_other') IS NOT NULL")
        assert cursor.fetchone()[0]
