"""Rows read by a statement built once per process, made into instances as a queryset makes them.

Compiling a wide SELECT through the ORM costs more CPU than running it on the hot paths (a
push's read, an owner save's read of its customers): they build their statement once and
turn each row into an instance here, through Django's converters and ``Model.from_db``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Converters = list[tuple[int, list[Any], Any]]  # (column index, converter functions, expression)


def field_converters(model: Any, connection: Any) -> tuple[tuple[str, ...], Converters]:
    """The attributes ``model``'s concrete fields fill, in order, and the converters Django applies
    to their columns (backend's, then the field's), for a row holding every concrete field."""
    names, converters = [], []
    for index, field in enumerate(model._meta.concrete_fields):
        names.append(field.attname)
        col = field.get_col(model._meta.db_table)
        if functions := connection.ops.get_db_converters(col) + field.get_db_converters(connection):
            converters.append((index, functions, col))
    return tuple(names), converters


def from_row(model: Any, using: str, names: Sequence[str], row: Sequence[Any], converters: Converters,
             connection: Any) -> Any:  # fmt: skip
    """An instance of ``model`` from ``row`` (one value per name), converted as a queryset would."""
    if converters:
        row = list(row)
        for index, functions, expression in converters:
            for function in functions:
                row[index] = function(row[index], expression, connection)
    return model.from_db(using, names, row)
