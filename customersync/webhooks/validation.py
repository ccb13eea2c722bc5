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

from ..exceptions import EventError
from ..models import Customer, WebhookEvent
from ..models.columns import text_fault
from ..models.remote import CREATED_MAX, CUSTOMER_ID, STRIPE_OWNED, customer_problems, timestamp_ok

# Containers inside containers: an event is 1, its data 2, the object 3. Stripe's
# deepest customer events (an expanded source's owner address) stay under 10.
MAX_DEPTH = 32
# Stripe's own ids: a prefix, an underscore, letters and digits (customers': ``models.remote``).
EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]+")
__all__ = ["MAX_DEPTH", "CREATED_MAX", "EVENT_ID", "CUSTOMER_ID", "STRIPE_OWNED", "parse_payload", "check_event"]


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
    if not timestamp_ok(event.get("created")):
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


def _check_customer(obj: dict[str, Any]) -> None:
    """Each customer field the mirror copies has the type and size its column holds."""
    for name, expected in customer_problems(obj, id_max=_max(WebhookEvent, "stripe_id")):
        if name != "id":  # the id was judged above, with its own message
            raise _unusable(f"data.object.{name}", expected)
