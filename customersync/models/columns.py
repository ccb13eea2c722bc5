"""Whether each value fits the column that stores it, checked before a row is written.

A value the database cannot hold must be an error naming its field, not an
``OverflowError`` or a ``DataError`` from the driver (which, in a bulk write,
fails the whole page). The limits are the model's own, the same on every
database (SQLite would take more): the integer fields' ranges (``balance`` is a
``BigIntegerField``, ``next_invoice_sequence`` a ``PositiveIntegerField``, at
most 2147483647), ``max_length``, no ``None`` where the column is not
nullable, JSON that JSON can hold, and text that passes ``text_fault``.

``text_fault`` is the one text rule, for every text from code, the admin, a
pull page or a webhook event (``webhooks.validation`` words it for events): no
NUL (PostgreSQL cannot store it), no lone surrogate (not text: it cannot be
encoded to send or store), and no control character but tab, line feed and
carriage return (C0, DEL and C1: nothing a customer's values hold, and what
turns a log line or a terminal into something else).

Errors are keyed like the rest of the validation: Stripe's bracket names
(``address[line1]``, ``metadata[plan]``; ``tax[ip_address]`` for a value in
``pending_once``), the field's name for other columns (``stripe_data[name]``).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import models
from django.db.backends.base.operations import BaseDatabaseOperations

from ..core.shapes import kind

__all__ = ["column_errors", "text_fault", "INTEGER_RANGES", "JUDGED"]

# The model's limits, not the connection's: SQLite reports a 64-bit range for every integer field.
INTEGER_RANGES: dict[str, tuple[int, int]] = BaseDatabaseOperations.integer_field_ranges
NUL = "\x00"
# The fields whose values can be refused here; any other field's value always fits.
JUDGED: tuple[type[models.Field], ...] = (models.CharField, models.TextField, models.IntegerField, models.JSONField)
_NUL_MESSAGE = "The database cannot store the NUL character (\\x00): remove it."
# What ``text_fault`` refuses: NUL, the other C0 controls but tab, line feed and carriage return,
# DEL and C1, and lone surrogates.
_REFUSED_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# The same, as JSON text shows it (C0 controls escaped, \b and \f by letter; the rest as is). A false
# alarm (an escaped backslash before "b") only makes ``_json`` walk the value and find nothing.
_REFUSED_IN_JSON = re.compile(r"\\u00[01][0-9a-f]|\\[bf]|[\x7f-\x9f\ud800-\udfff]")
_STRICT = json.JSONEncoder(allow_nan=False, ensure_ascii=False).encode


def text_fault(text: str) -> str | None:
    """What the one text rule finds in ``text``: ``"nul"``, ``"surrogate"``, ``"control"`` (its
    first refused character decides), or None when the text is fine."""
    found = _REFUSED_TEXT.search(text)
    if found is None:
        return None
    char = found.group()
    if char == NUL:
        return "nul"
    return "surrogate" if "\ud800" <= char <= "\udfff" else "control"


def _text_message(text: str, fault: str) -> str:
    if fault == "nul":
        return _NUL_MESSAGE
    char = _REFUSED_TEXT.search(text).group()  # type: ignore[union-attr]
    if fault == "surrogate":
        return f"Holds a lone surrogate ({char!r}), which is not text: remove it."
    return f"Holds the control character {char!r}: remove it."


def column_errors(instance: models.Model, fields: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Every value of ``instance`` (or of its ``fields``) that its column cannot hold; ``{}`` when all fit."""
    errors: dict[str, list[str]] = {}
    only = set(fields) if fields is not None else None
    judged = [
        (field, holds, max_length, getattr(instance, field.attname))
        for field, holds, max_length in _judged(type(instance))
        if only is None or field.name in only
    ]
    # The JSON values fit when JSON encodes them all at once: one encoding for the row, not one each.
    documents = [value for _field, holds, _max, value in judged if holds is _JSON and value is not None]
    documents_fit = not documents or _plain_json(documents)
    for field, holds, max_length, value in judged:
        # The common values, surely fitting, are passed without looking further.
        if holds is _TEXT and type(value) is str and (max_length is None or len(value) <= max_length):
            if _REFUSED_TEXT.search(value) is None:
                continue
        elif holds is _JSON and value is not None and documents_fit:
            continue
        for key, message in _problems(field, value):
            errors.setdefault(key, []).append(message)
    return errors


_TEXT, _JSON, _OTHER = "text", "json", "other"


@functools.cache
def _judged(model: type[models.Model]) -> tuple[tuple[models.Field, str, int | None], ...]:
    """The fields of ``model`` whose value can be refused, each with its kind (``_TEXT``, ``_JSON``,
    ``_OTHER``) and ``max_length``: read once per model, not for each customer of a page."""
    return tuple(
        (field, _kind(field), field.max_length)
        for field in model._meta.concrete_fields
        if not (field.primary_key or field.is_relation) and isinstance(field, JUDGED)
    )


def _kind(field: models.Field) -> str:
    if isinstance(field, (models.CharField, models.TextField)):
        return _TEXT
    return _JSON if isinstance(field, models.JSONField) else _OTHER


def _problems(field: models.Field, value: Any) -> Iterable[tuple[str, str]]:
    name = field.name
    if value is None:
        if not field.null and isinstance(field, (models.CharField, models.TextField)):
            yield name, "Cannot be null: use '' for no value."
        elif not field.null and isinstance(field, (models.IntegerField, models.JSONField)):
            yield name, "Cannot be null."
        return
    if isinstance(field, (models.CharField, models.TextField)):
        if not isinstance(value, str):
            yield name, f"Expected text, not {kind(value)}."
            return
        if field.max_length is not None and len(value) > field.max_length:
            yield name, f"Use at most {field.max_length} characters (this has {len(value)})."
        fault = text_fault(value)
        if fault:
            yield name, _text_message(value, fault)
    elif isinstance(field, models.IntegerField):
        if isinstance(value, bool) or not isinstance(value, int):
            yield name, f"Enter a whole number, not {kind(value)}."
            return
        low, high = INTEGER_RANGES[field.get_internal_type()]
        if not low <= value <= high:
            yield name, f"Use a whole number from {low} to {high}, the range its database column holds."
    elif isinstance(field, models.JSONField) and not _plain_json(value):
        # pending_once holds Stripe's own parameters: name them as Stripe does.
        yield from _json(() if name == "pending_once" else (name,), value)


def _plain_json(value: Any) -> bool:
    """Whether ``value`` surely fits a JSON column: JSON encodes it (in C) and its text holds nothing
    ``text_fault`` refuses. When not, ``_json`` walks it to name what does not fit (a false alarm
    finds nothing)."""
    try:
        return _REFUSED_IN_JSON.search(_STRICT(value)) is None
    except (TypeError, ValueError, RecursionError):
        return False


def _json(path: tuple[str, ...], value: Any) -> Iterable[tuple[str, str]]:
    def where(*more: str) -> str:
        parts = (*path, *more)
        return parts[0] + "".join(f"[{part}]" for part in parts[1:]) if parts else "pending_once"

    if isinstance(value, str):
        fault = text_fault(value)
        if fault:
            yield where(), _text_message(value, fault)
    elif type(value) is dict or isinstance(value, Mapping):
        for key, item in value.items():
            fault = text_fault(key) if isinstance(key, str) else None
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                yield where(), f"Cannot store a key of type {type(key).__name__} in JSON ({key!r})."
            elif fault == "nul":
                yield where(), f"Key {key!r}: the database cannot store the NUL character (\\x00) in a key."
            elif fault:
                yield where(), f"Key {key!r}: {_text_message(key, fault)}"
            else:
                yield from _json((*path, str(key)), item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _json(path, item)
    elif isinstance(value, float) and not math.isfinite(value):
        yield where(), f"Cannot store {value} in JSON."
    elif value is not None and not isinstance(value, (bool, int, float)):
        yield where(), f"Cannot store {type(value).__name__} in JSON."
