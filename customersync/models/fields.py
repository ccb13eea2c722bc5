"""The customer's JSON columns: Django's ``JSONField``, written one value per placeholder.

On PostgreSQL, ``bulk_create`` sends a page's rows as one array per column
(``UNNEST``) unless a field gives its own placeholder. An array of JSON
documents is quoted element by element in Python by psycopg's client-side
binding (every ``"`` of every document escaped by a regular expression), which
made the JSON columns the costliest part of a pull's page. With a placeholder
of its own the page is sent as ``VALUES`` rows, each document quoted once by
libpq: measured on a page of 100 new customers (Python 3.11, psycopg 3.3, the
median of 40 inserts), 346 against 268 microseconds of CPU a row; with Python
3.13 and Django 6.1, whose regular expressions expand the escapes in C, the two
cost the same (326 and 327). SQLite writes ``VALUES`` rows either way.

Django 6.1 asks ``get_placeholder_sql``, earlier versions ``get_placeholder``:
the field answers both (given both, 6.1 does not warn that the older one is
deprecated).

The column, its lookups and its migrations are ``JSONField``'s own
(``deconstruct`` names Django's class), so the field can change back without a
migration.
"""

from __future__ import annotations

from typing import Any

from django.db import models

__all__ = ["JSONColumn"]


class JSONColumn(models.JSONField):
    def get_placeholder_sql(self, value: Any, compiler: Any, connection: Any) -> tuple[str, tuple[Any, ...]]:
        """Django 6.1 and later: the placeholder and its parameters (an expression compiles to its own)."""
        if hasattr(value, "as_sql"):
            return compiler.compile(value)
        return "%s", (value,)

    def get_placeholder(self, value: Any, compiler: Any, connection: Any) -> str:
        """Django 5.2 and 6.0, which compile an expression before asking for a placeholder."""
        return "%s"

    def deconstruct(self) -> tuple[Any, ...]:
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.JSONField", args, kwargs
