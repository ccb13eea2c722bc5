"""The events log: every change to customers as the event Stripe keeps for it, and ``GET /v1/events``.

Each account has its own events, as on Stripe: a connected account's events
are listed only with its ``Stripe-Context`` (or ``Stripe-Account``) header.
An event is logged for each change, whether made through the API (its
``request`` names the request's id and ``Idempotency-Key``) or in Stripe
itself (the dashboard, the Billing Portal).

Order: the log keeps events in the order they were made, and an event's
``created`` never goes below the one before it (the clock is the machine's,
plus what ``advance_clock`` added). The API lists them newest first: by
``created``, and among events created in the same second by the order they
were made (the later one first), so a test gets distinct, ordered events
without waiting for the clock.

Retention: events older than the retention window (30 days unless set) are
neither listed nor retrieved, and a cursor naming one is unknown.

Delivery: an event sent to the ``forward_to`` URL is delivered once the site
answers 2xx; one held (``hold_deliveries``) or refused stays pending
(``pending_webhooks`` 1, ``delivery_success=false``) until it is sent again and
taken. An event made while no URL is set, or made through the API (the fake
forwards only changes made in Stripe), has no endpoint to wait for: it counts
as delivered (``pending_webhooks`` 0), as Stripe counts an event whose every
endpoint took it.

Public names: ``DEFAULT_RETENTION``, ``MAX_TYPES``, the delivery states ``NO_ENDPOINT``, ``HELD``,
``SENDING``, ``FAILED``, ``DELIVERED``, ``LoggedEvent``, ``no_such_event``, ``EventLog``.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .rules import INTEGER, FakeStripeAPIError, invalid, reject_unknown_params, string_param

# Stripe keeps events for 30 days.
DEFAULT_RETENTION = 30 * 24 * 3600
# ``types`` takes up to 20 event types.
MAX_TYPES = 20
_RANGE_OPERATORS = ("gt", "gte", "lt", "lte")
# Delivery states: nothing to send to, held (pending), being sent, refused (pending), delivered.
NO_ENDPOINT, HELD, SENDING, FAILED, DELIVERED = "no_endpoint", "held", "sending", "failed", "delivered"


@dataclass
class LoggedEvent:
    """One event in the log: the event as it was made, the account whose log holds it (None: legacy
    mode's default account), its place in the log and its delivery state."""

    event: dict[str, Any]
    account: str | None
    sequence: int
    delivery: str

    @property
    def delivered(self) -> bool:
        """Whether no endpoint still waits for it (``delivery_success=true``)."""
        return self.delivery in (NO_ENDPOINT, DELIVERED)

    def render(self) -> dict[str, Any]:
        """The event as the API shows it: ``pending_webhooks`` as its delivery stands."""
        shown = copy.deepcopy(self.event)
        shown["pending_webhooks"] = 0 if self.delivered else 1
        return shown


def no_such_event(event_id: str, param: str = "id") -> FakeStripeAPIError:
    # 404 for the event in the path; 400 when a parameter (a list cursor) names it.
    return FakeStripeAPIError(
        404 if param == "id" else 400, f"No such event: '{event_id}'", code="resource_missing", param=param
    )


class EventLog:
    """Every account's events in the order they were made, the clock they are stamped with and
    the retention window. Not thread-safe: the server locks."""

    def __init__(self) -> None:
        self.entries: list[LoggedEvent] = []
        self.by_id: dict[str, LoggedEvent] = {}
        self.retention = DEFAULT_RETENTION
        self.offset = 0
        self.last_created = 0

    def clear(self) -> None:
        """Forget the events; the retention window and the clock back to the machine's."""
        self.entries.clear()
        self.by_id.clear()
        self.retention = DEFAULT_RETENTION
        self.offset = 0
        self.last_created = 0

    def now(self) -> int:
        """The clock events are stamped and aged by: the machine's, plus what ``advance`` added."""
        return int(time.time()) + self.offset

    def advance(self, seconds: int) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
            raise ValueError(f"the clock moves forward by a whole number of seconds from 0, not {seconds!r}")
        self.offset += seconds

    def set_retention(self, seconds: int | None) -> None:
        if seconds is None:
            self.retention = DEFAULT_RETENTION
            return
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
            raise ValueError(f"retention is a whole number of seconds from 1, or None, not {seconds!r}")
        self.retention = seconds

    def next_created(self) -> int:
        """The ``created`` of the next event: now, never before the last one's."""
        self.last_created = max(self.now(), self.last_created)
        return self.last_created

    def add(self, event: dict[str, Any], account: str | None, delivery: str) -> LoggedEvent:
        logged = LoggedEvent(event, account, len(self.entries), delivery)
        self.entries.append(logged)
        self.by_id[event["id"]] = logged
        return logged

    def undelivered(self) -> list[LoggedEvent]:
        """Events an endpoint still waits for, oldest first (expired ones too: delivery is not listing)."""
        return [logged for logged in self.entries if logged.delivery in (HELD, FAILED)]

    def _kept(self, logged: LoggedEvent) -> bool:
        return int(logged.event["created"]) > self.now() - self.retention

    def visible(self, account: str | None) -> list[LoggedEvent]:
        """``account``'s events within the retention window, oldest first."""
        return [logged for logged in self.entries if logged.account == account and self._kept(logged)]

    # GET /v1/events/{id} and GET /v1/events

    def retrieve(self, account: str | None, event_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        reject_unknown_params(params, ("expand",))
        logged = self.by_id.get(event_id)
        if logged is None or logged.account != account or not self._kept(logged):
            raise no_such_event(event_id)
        return logged.render()

    def list_page(self, account: str | None, params: Mapping[str, Any]) -> dict[str, Any]:
        reject_unknown_params(
            params,
            ("limit", "starting_after", "ending_before", "type", "types", "created", "delivery_success", "expand"),
        )
        limit = _limit(params)
        matches = _type_filter(params)
        in_range = _created_filter(params.get("created"))
        success = _boolean(params, "delivery_success")
        if "starting_after" in params and "ending_before" in params:
            raise invalid(
                "You may only specify one of these parameters: ending_before, starting_after.", "ending_before"
            )
        events = self.visible(account)
        position = {logged.event["id"]: index for index, logged in enumerate(events)}

        def listed(indexes: Iterable[int]) -> list[LoggedEvent]:
            """The first ``limit + 1`` matching events at these places (one more tells ``has_more``)."""
            found = []
            for index in indexes:
                logged = events[index]
                if (
                    matches(logged.event["type"])
                    and in_range(logged.event["created"])
                    and (success is None or logged.delivered == success)
                ):
                    found.append(logged)
                    if len(found) > limit:
                        break
            return found

        if "starting_after" in params:
            cursor = string_param(params["starting_after"], "starting_after")
            if cursor not in position:
                raise no_such_event(cursor, "starting_after")
            found = listed(range(position[cursor] - 1, -1, -1))
            page = found[:limit]
        elif "ending_before" in params:
            cursor = string_param(params["ending_before"], "ending_before")
            if cursor not in position:
                raise no_such_event(cursor, "ending_before")
            found = listed(range(position[cursor] + 1, len(events)))  # the nearest newer ones first
            page = found[:limit][::-1]  # the page just newer than the cursor, still newest first
        else:
            found = listed(range(len(events) - 1, -1, -1))
            page = found[:limit]
        return {
            "object": "list",
            "data": [logged.render() for logged in page],
            "has_more": len(found) > limit,
            "url": "/v1/events",
        }


def _limit(params: Mapping[str, Any]) -> int:
    if "limit" not in params:
        return 10
    text = string_param(params["limit"], "limit")
    if not INTEGER.fullmatch(text):
        raise invalid(f"Invalid integer: {text}", "limit", "parameter_invalid_integer")
    if not 1 <= int(text) <= 100:
        raise invalid("Invalid limit: must be between 1 and 100", "limit")
    return int(text)


def _type_pattern(text: str) -> re.Pattern[str]:
    """An event type, or a group of them with ``*`` as a wildcard (``customer.*``)."""
    return re.compile(".*".join(re.escape(part) for part in text.split("*")))


def _type_filter(params: Mapping[str, Any]) -> Any:
    """Whether an event type is wanted, by ``type`` (``*`` a wildcard) or ``types`` (exact names)."""
    if "type" in params and "types" in params:
        raise invalid("You may pass either type or types, but not both.", "types", "parameters_exclusive")
    if "type" in params:
        pattern = _type_pattern(string_param(params["type"], "type"))
        return lambda kind: pattern.fullmatch(kind) is not None
    if "types" in params:
        types = params["types"]
        if isinstance(types, Mapping):  # types[0]=...: numbered items
            types = list(types.values())
        if not isinstance(types, list) or not types or not all(isinstance(kind, str) for kind in types):
            raise invalid("Invalid array: types is a list of event types (types[]=...)", "types")
        if len(types) > MAX_TYPES:
            raise invalid(f"Invalid array: types must have at most {MAX_TYPES} elements", "types")
        wanted = set(types)
        return lambda kind: kind in wanted
    return lambda kind: True


def _created_filter(created: Any) -> Any:
    """Whether a ``created`` is wanted: ``created=<seconds>`` exactly, or ``created[gt|gte|lt|lte]``."""
    if created is None:
        return lambda stamp: True
    if isinstance(created, str):
        if not INTEGER.fullmatch(created):
            raise invalid(f"Invalid integer: {created}", "created", "parameter_invalid_integer")
        return lambda stamp: stamp == int(created)
    if not isinstance(created, Mapping) or not created or set(created) - set(_RANGE_OPERATORS):
        raise invalid("Invalid created: use created=<seconds> or created[gt], [gte], [lt] or [lte]", "created")
    bounds: dict[str, int] = {}
    for op, text in created.items():
        if not isinstance(text, str) or not INTEGER.fullmatch(text):
            raise invalid(f"Invalid integer: {text}", f"created[{op}]", "parameter_invalid_integer")
        bounds[op] = int(text)

    def in_range(stamp: int) -> bool:
        return (
            ("gt" not in bounds or stamp > bounds["gt"])
            and ("gte" not in bounds or stamp >= bounds["gte"])
            and ("lt" not in bounds or stamp < bounds["lt"])
            and ("lte" not in bounds or stamp <= bounds["lte"])
        )

    return in_range


def _boolean(params: Mapping[str, Any], name: str) -> bool | None:
    if name not in params:
        return None
    text = string_param(params[name], name)
    if text not in ("true", "false"):
        raise invalid(f"Invalid boolean: {text}", name)
    return text == "true"
