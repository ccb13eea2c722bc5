"""What a customer object from Stripe must hold before the mirror takes it.

A pull page, a refresh and a webhook event all bring Stripe's customer object;
``customer_problems`` says, for each, what cannot be used: an id that is not a
customer id the mirror's column holds, a ``created`` that is not a whole number
of seconds, a field of a type its column does not hold (text for a JSON
object, a word for a number), an integer past its column's range, and (with
``lengths``) text longer than its column. The webhook refuses the event with
the first problem (a 400 naming it). A pull judges the id and the values
Stripe owns that the mirror converts (``created``, ``delinquent``): it takes
the updatable fields in any shape their columns hold (the next push says what
Stripe would refuse), and skips that customer, storing the rest of its page.
"""

from __future__ import annotations

import re
from typing import Any

from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import BooleanField, CharField, DateTimeField, IntegerField, JSONField, TextField

from ..core.params import TABLE, Shape
from .customer import Customer

__all__ = ["CREATED_MAX", "CUSTOMER_ID", "STRIPE_OWNED", "customer_problems", "customer_id_ok", "timestamp_ok"]

# Unix seconds, from 1970 up to 2100-01-01: what datetime and every database hold.
CREATED_MAX = 4_102_444_800
# Stripe's customer ids: cus_, then letters, digits and _.
CUSTOMER_ID = re.compile(r"cus_[A-Za-z0-9_]+")
# The customer's fields that Stripe owns and the mirror copies (besides the updatable state).
STRIPE_OWNED = ("created", "livemode", "currency", "delinquent")
_ID_MAX = int(Customer._meta.get_field("stripe_id").max_length)  # type: ignore[arg-type]


def timestamp_ok(value: Any) -> bool:
    """A whole number of Unix seconds from 0 to ``CREATED_MAX``."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= CREATED_MAX


def customer_id_ok(value: Any, limit: int = _ID_MAX) -> bool:
    """A Stripe customer id (``cus_...``) of at most ``limit`` characters."""
    return isinstance(value, str) and len(value) <= limit and CUSTOMER_ID.fullmatch(value) is not None


def customer_problems(
    obj: Any, *, lengths: bool = True, id_max: int = _ID_MAX, fields: tuple[str, ...] | None = None
) -> list[tuple[str, str]]:
    """``(field, what it must be)`` for each value of Stripe's customer ``obj`` the mirror cannot
    take; ``[]`` when it can. ``lengths``: also text past its column (a pull leaves that to
    ``columns.column_errors``, which counts the characters). ``fields``: judge only these (and
    the id); None: every field the mirror copies."""
    if not isinstance(obj, dict):
        return [("object", "an object")]
    found: list[tuple[str, str]] = []
    if not customer_id_ok(obj.get("id"), id_max):
        found.append(("id", f"a customer id cus_... of letters, digits and _, at most {id_max}"))
    ranges = BaseDatabaseOperations.integer_field_ranges
    for name in (*TABLE.state_fields, *STRIPE_OWNED) if fields is None else fields:
        value = obj.get(name)
        if value is None:
            continue
        field = Customer._meta.get_field(name)
        if isinstance(field, JSONField):
            types, kind = _json_shape(name)
            if not isinstance(value, types):
                found.append((name, kind))
        elif isinstance(field, (CharField, TextField)):
            if isinstance(value, dict) and name in TABLE.state_fields:
                value = value.get("id")  # an expanded object (default_source): the mirror keeps its id
            limit = field.max_length if lengths else None
            if value is not None and (not isinstance(value, str) or (limit and len(value) > limit)):
                found.append((name, f"null or a string of at most {limit} characters" if limit else "a string"))
        elif isinstance(field, BooleanField):
            if not isinstance(value, bool):
                found.append((name, "null, true or false"))
        elif isinstance(field, IntegerField):
            low, high = ranges[field.get_internal_type()]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                found.append((name, f"null or an integer from {low} to {high}"))
        elif isinstance(field, DateTimeField) and not timestamp_ok(value):
            found.append((name, f"null or an integer number of seconds from 0 to {CREATED_MAX}"))
    return found


def _json_shape(name: str) -> tuple[tuple[type, ...], str]:
    """The Python types a JSON column of the mirror holds, and how to say it."""
    containers: dict[Shape, tuple[tuple[type, ...], str]] = {
        Shape.MAP: ((dict,), "an object of keys and values"),
        Shape.LIST: ((list,), "a list"),
        Shape.OBJECT: ((dict, type(None)), "an object or null"),
    }
    shape: tuple[tuple[type, ...], str] = ((dict, list), "an object or a list")
    for p in TABLE.state:
        if p.field != name:
            continue
        if len(p.path) > 1:
            shape = ((dict,), "an object")
        elif p.shape is not Shape.SCALAR:
            shape = containers[p.shape]
    return shape
