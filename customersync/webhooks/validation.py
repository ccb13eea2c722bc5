"""What a webhook event must look like before it touches the mirror.

A valid signature proves who sent a payload, not that the mirror can hold it.
``parse_payload`` reads the body and ``check_event`` refuses, with an
``EventError`` naming the part, any event whose id, type, time, object or
customer fields would fail on the way to the database (a wrong type, a value
longer than its column, an integer out of range, nesting deeper than
``MAX_DEPTH``, text the one text rule refuses: ``models.columns.text_fault``).
Stripe sends none of these; the check turns a mistaken or hand-made payload
into a clear 400, never a 500 or a bad row.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import BooleanField, CharField, DateTimeField, IntegerField, JSONField, TextField

from ..core.params import TABLE, Shape
from ..exceptions import EventError
from ..models import Customer, WebhookEvent
from ..models.columns import text_fault

# Containers inside containers: an event is 1, its data 2, the object 3. Stripe's
# deepest customer events (an expanded source's owner address) stay under 10.
MAX_DEPTH = 32
# Unix seconds, from 1970 up to 2100-01-01: what datetime and every database hold.
CREATED_MAX = 4_102_444_800
# Stripe's own ids: a prefix, an underscore, letters and digits.
EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]+")
CUSTOMER_ID = re.compile(r"cus_[A-Za-z0-9_]+")
# The customer's fields that Stripe owns and the mirror copies (besides the updatable state).
STRIPE_OWNED = ("created", "livemode", "currency", "delinquent")


def _max(model: type, name: str) -> int:
    return int(model._meta.get_field(name).max_length)


def parse_payload(body: bytes) -> Any:
    """The JSON in ``body`` (for ``check_event``); ``EventError`` when there is none."""
    try:
        return json.loads(body)
    except RecursionError:  # so deep that the parser's own stack gives out, far past MAX_DEPTH
        raise EventError(f"The payload is nested more than {MAX_DEPTH} levels deep.") from None
    except ValueError:  # not UTF-8, not JSON, or an integer of thousands of digits
        raise EventError("The payload is not JSON.") from None


def check_event(event: Any) -> None:
    """Raise ``EventError`` unless ``event`` is a Stripe event the mirror can record and apply."""
    if not isinstance(event, dict) or "id" not in event:
        raise EventError("The payload is not a Stripe event.")
    _check_tree(event)
    event_id, id_max = event["id"], _max(WebhookEvent, "event_id")
    if not (isinstance(event_id, str) and EVENT_ID.fullmatch(event_id)) or len(event_id) > id_max:
        raise _unusable("id", f"a string evt_... of letters, digits and _, at most {id_max} characters")
    kind = event.get("type")
    if not isinstance(kind, str) or not 0 < len(kind) <= _max(WebhookEvent, "type"):
        raise _unusable("type", f"a string of 1 to {_max(WebhookEvent, 'type')} characters")
    if not _timestamp(event.get("created")):
        raise _unusable("created", f"an integer number of seconds from 0 to {CREATED_MAX}")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise _unusable("data.object", "an object")
    object_id, id_max = obj.get("id"), min(_max(Customer, "stripe_id"), _max(WebhookEvent, "stripe_id"))
    if obj.get("object") == "customer":
        if not (isinstance(object_id, str) and CUSTOMER_ID.fullmatch(object_id)) or len(object_id) > id_max:
            raise _unusable("data.object.id", f"a customer id cus_... of letters, digits and _, at most {id_max}")
    elif object_id is not None and not (isinstance(object_id, str) and 0 < len(object_id) <= id_max):
        # Other objects may have none (a balance, an upcoming invoice) or one of the account's choosing (a plan).
        raise _unusable("data.object.id", f"null or a string of 1 to {id_max} characters")
    request = event.get("request")
    # Since API version 2017-05-25 an object; before, the request id as a string.
    key = request.get("idempotency_key") if isinstance(request, dict) else None
    key_max = _max(WebhookEvent, "idempotency_key")
    if key is not None and (not isinstance(key, str) or len(key) > key_max):
        raise _unusable("request.idempotency_key", f"null or a string of at most {key_max}")
    if obj.get("object") == "customer":
        _check_customer(obj)


def _unusable(where: str, expected: str) -> EventError:
    return EventError(f"Unusable Stripe event: {where} must be {expected}.")


def _timestamp(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= CREATED_MAX


def _check_tree(event: dict[str, Any]) -> None:
    """Bounded nesting, finite numbers, and text a database can store, everywhere in the event."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(event, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, (dict, list)):
            if len(path) >= MAX_DEPTH:
                raise EventError(f"Unusable Stripe event: nested more than {MAX_DEPTH} levels deep.")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_text(key, path)
                elif isinstance(value, dict):
                    raise EventError(f"Unusable Stripe event: a key in {_where(path)} is not a string.")
                stack.append((item, (*path, str(key))))
        elif isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, float) and not math.isfinite(value):
            raise EventError(f"Unusable Stripe event: {_where(path)} is NaN or infinite, which JSON does not allow.")
        elif value is not None and not isinstance(value, (bool, int, float)):
            raise EventError(f"Unusable Stripe event: {_where(path)} is not JSON data.")


# The one text rule (``models.columns.text_fault``), said of an event.
_TEXT_FAULTS = {
    "nul": "holds a NUL character",
    "surrogate": "is not valid Unicode (a lone surrogate)",
    "control": "holds a control character (only tab, line feed and carriage return are taken)",
}


def _check_text(text: str, path: tuple[str, ...]) -> None:
    fault = text_fault(text)
    if fault:
        raise EventError(f"Unusable Stripe event: text in {_where(path)} {_TEXT_FAULTS[fault]}.")


def _where(path: tuple[str, ...]) -> str:
    return ".".join(path) or "the event"


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


def _check_customer(obj: dict[str, Any]) -> None:
    """Each customer field the mirror copies has the type and size its column holds."""
    ranges = BaseDatabaseOperations.integer_field_ranges
    for name in (*TABLE.state_fields, *STRIPE_OWNED):
        value = obj.get(name)
        if value is None:
            continue
        field = Customer._meta.get_field(name)
        where = f"data.object.{name}"
        if isinstance(field, JSONField):
            types, kind = _json_shape(name)
            if not isinstance(value, types):
                raise _unusable(where, kind)
        elif isinstance(field, (CharField, TextField)):
            if isinstance(value, dict) and name in TABLE.state_fields:
                value = value.get("id")  # an expanded object (default_source): the mirror keeps its id
            limit = field.max_length
            if value is not None and (not isinstance(value, str) or (limit and len(value) > limit)):
                raise _unusable(where, f"null or a string of at most {limit} characters" if limit else "a string")
        elif isinstance(field, BooleanField):
            if not isinstance(value, bool):
                raise _unusable(where, "null, true or false")
        elif isinstance(field, IntegerField):
            low, high = ranges[field.get_internal_type()]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise _unusable(where, f"null or an integer from {low} to {high}")
        elif isinstance(field, DateTimeField) and not _timestamp(value):
            raise _unusable(where, f"null or an integer number of seconds from 0 to {CREATED_MAX}")
