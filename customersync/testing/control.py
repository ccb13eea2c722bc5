"""The ``/_fake/`` control API: lets another process drive the fake over HTTP.

JSON in, JSON out, not logged. Each route calls one public method of
``FakeStripeServer``, so the control API can do nothing the Python API cannot.

Every control request carries a key the server's API takes (its ``api_key``,
or any ``sk_test_`` key when it takes any; once a platform is registered, a
platform's current key) as ``Authorization: Bearer <key>``, and the header
``X-Fake-Stripe-Control: 1``
(``control_headers(key)`` gives both). A web page the developer happens to
open can send neither: a custom header needs a CORS preflight, which this
server never grants, so no page can reset the fake or inject faults. A control
request must also be addressed to a loopback name (its ``Host`` is ``localhost``,
a 127.0.0.0/8 address or ``[::1]``, with or without a port): a page whose own
name an attacker re-pointed at 127.0.0.1 (DNS rebinding) sends its own name
there, and is refused before the key is looked at. The request log it serves
shows ``Authorization`` as ``Bearer [redacted]``.

Accounts: ``POST /_fake/platforms`` (``add_platform``'s arguments: ``account_id``,
``keys``, ``connected``), ``POST /_fake/platforms/<acct>/keys`` (``keys``: key
rotation), ``POST /_fake/platforms/<acct>/connected`` (``account_id``),
``POST /_fake/rate_limits`` (``account``, ``per_second``),
``GET /_fake/accounts/<acct>/customers``; ``account`` in the body of
``/_fake/customers``, ``/_fake/seed`` and ``/_fake/faults`` aims at that
account's store or requests.

Changes made in Stripe itself, and their events: ``POST /_fake/events`` with
``type`` (``customer.updated``: ``change_customer``; ``customer.created``:
``create_customer``; ``customer.deleted``: ``remove_customer``), ``customer``
(the id, for an update or a deletion), ``params`` (the API's params, as JSON)
and ``account`` answers the event; ``GET /_fake/events`` lists the events,
``GET /_fake/deliveries`` what was sent where and the answers, and
``POST /_fake/forward`` (``url``, ``secret``; ``url: null`` stops) is
``forward_to``. A change the API would refuse is answered as the API answers it.

The events log (``GET /v1/events``): ``POST /_fake/deliveries/hold`` is
``hold_deliveries``, ``POST /_fake/deliveries/resume`` is ``resume_deliveries``
(answers the deliveries it made), ``POST /_fake/event_retention`` (``seconds``, or
``null`` for 30 days) is ``set_event_retention``, ``POST /_fake/clock``
(``seconds``) is ``advance_clock``; both clock routes, ``GET`` too, answer
``{"clock": <the events' clock, Unix seconds>}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .handler import Headers, Response, is_loopback_host, json_bytes
from .rules import FakeStripeAPIError

if TYPE_CHECKING:
    from .server import FakeStripeServer


CONTROL_HEADER = "X-Fake-Stripe-Control"


# Customers one seed request may add: a typo's n=10**9 is refused; at the bound
# the fake works a minute or two and holds some 400 MB (the Python API has no bound).
MAX_SEED = 100_000


MAX_PREFIX = 200


def control_headers(api_key: str) -> dict[str, str]:
    """The headers a control request needs, for a server that takes ``api_key``."""
    return {"Authorization": f"Bearer {api_key}", CONTROL_HEADER: "1"}


def answer_control(
    fake: FakeStripeServer,
    authorized: Callable[[str | None], bool],
    method: str,
    path: str,
    body: bytes,
    headers: Headers,
) -> Response:
    """Answer a control request to ``fake``: 403 unless it is addressed to a loopback name, then
    401 or 403 unless it carries a key that ``authorized`` takes and the control header."""
    if not loopback_host_header(headers.get("Host")):
        message = "The control API answers only requests addressed to localhost, 127.0.0.1 or [::1] (the Host header)."
        error = {"error": {"type": "invalid_request_error", "message": message}}
        return Response(403, json_bytes(error), {"Content-Type": "application/json"})
    scheme, _, credential = (headers.get("Authorization") or "").strip().partition(" ")
    keyed = scheme.lower() == "bearer" and authorized(credential.strip() or None)
    if not keyed or headers.get(CONTROL_HEADER) != "1":
        message = (
            "The control API needs the key the server takes, as Authorization: Bearer sk_test_..., "
            f"and the header {CONTROL_HEADER}: 1."
        )
        error = {"error": {"type": "invalid_request_error", "message": message}}
        extra = {} if keyed else {"WWW-Authenticate": 'Bearer realm="fake-stripe control"'}
        return Response(403 if keyed else 401, json_bytes(error), {"Content-Type": "application/json", **extra})
    status, payload = _dispatch(fake, method, path, body)
    return Response(status, json_bytes(payload), {"Content-Type": "application/json"})


def loopback_host_header(value: str | None) -> bool:
    """Whether a ``Host`` header names a loopback host: ``localhost``, 127.0.0.0/8 or ``[::1]``, with
    an optional port of ASCII digits. Anything else (no header, two of them, another name) is not."""
    if not value:
        return False
    host, port = value, ""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return False
        port = rest[1:] if rest else ""
        if ":" not in host:
            return False  # brackets are for IPv6 addresses only
    elif ":" in value:
        host, _, port = value.rpartition(":")
        if not port:
            return False
    if port and not re.fullmatch(r"[0-9]{1,5}", port):
        return False
    return is_loopback_host(host)


def _dispatch(fake: FakeStripeServer, method: str, path: str, body: bytes) -> tuple[int, Any]:
    """The status and JSON payload answering a control request."""
    route = (method, path.rstrip("/"))
    try:
        data = json.loads(body) if body.strip() else {}
        if route == ("POST", "/_fake/reset"):
            fake.reset()
            return 200, {"ok": True}
        if route == ("POST", "/_fake/customers"):
            return 200, fake.add_customer(**_json_object(data))
        if route == ("GET", "/_fake/customers"):
            return 200, list(fake.customers.values())
        if route == ("POST", "/_fake/seed"):
            return 200, fake.seed(**_seed_arguments(_json_object(data)))
        if route == ("GET", "/_fake/requests"):
            return 200, [record.to_dict() for record in fake.requests]
        if route == ("DELETE", "/_fake/requests"):
            fake.clear_requests()
            return 200, {"ok": True}
        if route == ("POST", "/_fake/faults"):
            fake.inject(**_json_object(data))
            return 200, {"ok": True}
        if route == ("POST", "/_fake/platforms"):
            fake.add_platform(**_json_object(data))
            return 200, {"ok": True}
        if route == ("POST", "/_fake/rate_limits"):
            fake.set_rate_limit(**_json_object(data))
            return 200, {"ok": True}
        if route == ("POST", "/_fake/events"):
            return 200, _change(fake, _json_object(data))
        if route == ("GET", "/_fake/events"):
            return 200, fake.events
        if route == ("GET", "/_fake/deliveries"):
            return 200, [delivery.to_dict() for delivery in fake.deliveries]
        if route == ("POST", "/_fake/forward"):
            fake.forward_to(**_json_object(data))
            return 200, {"ok": True}
        if route == ("POST", "/_fake/deliveries/hold"):
            fake.hold_deliveries()
            return 200, {"ok": True}
        if route == ("POST", "/_fake/deliveries/resume"):
            return 200, [delivery.to_dict() for delivery in fake.resume_deliveries()]
        if route == ("POST", "/_fake/event_retention"):
            fake.set_event_retention(**_json_object(data))
            return 200, {"ok": True}
        if route == ("POST", "/_fake/clock"):
            fake.advance_clock(**_json_object(data))
        if route in (("GET", "/_fake/clock"), ("POST", "/_fake/clock")):
            return 200, {"clock": fake.clock()}
        sources = re.fullmatch(r"/_fake/customers/([^/]+)/sources", route[1])
        if method == "POST" and sources:
            return 200, fake.attach_source(unquote(sources.group(1)), **_json_object(data))
        platform = re.fullmatch(r"/_fake/platforms/([^/]+)/(keys|connected)", route[1])
        if method == "POST" and platform:
            change = fake.set_platform_keys if platform.group(2) == "keys" else fake.add_connected_account
            change(unquote(platform.group(1)), **_json_object(data))
            return 200, {"ok": True}
        account = re.fullmatch(r"/_fake/accounts/([^/]+)/customers", route[1])
        if method == "GET" and account:
            return 200, list(fake.customers_of(unquote(account.group(1))).values())
    except FakeStripeAPIError as exc:  # what the API answers to the same change
        return exc.status, exc.body()
    except KeyError as exc:
        return 404, {"error": {"type": "invalid_request_error", "message": f"Not found: {exc}"}}
    except (TypeError, ValueError) as exc:
        return 400, {"error": {"type": "invalid_request_error", "message": str(exc)}}
    return 404, {"error": {"type": "invalid_request_error", "message": f"Unknown control route {method} {path}"}}


# The events ``POST /_fake/events`` makes, and whether each names its customer.
_EVENT_TYPES = {"customer.updated": True, "customer.created": False, "customer.deleted": True}


def _change(fake: FakeStripeServer, data: dict[str, Any]) -> dict[str, Any]:
    """Make the change ``POST /_fake/events`` asks for; its event."""
    unknown = sorted(set(data) - {"type", "customer", "params", "account"})
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}: give type, customer, params and account")
    kind, customer, account = data.get("type"), data.get("customer"), data.get("account")
    params = _json_object(data.get("params", {}))
    if kind not in _EVENT_TYPES:
        raise ValueError(f"type must be one of {', '.join(_EVENT_TYPES)}")
    if _EVENT_TYPES[kind] != isinstance(customer, str):
        wanted = "a customer id" if _EVENT_TYPES[kind] else "no customer"
        raise ValueError(f"{kind} takes {wanted} as customer")
    if kind == "customer.updated":
        return fake.change_customer(customer, account=account, **params)
    if kind == "customer.created":
        return fake.create_customer(account=account, **params)
    if params:
        raise ValueError("customer.deleted takes no params")
    return fake.remove_customer(customer, account=account)


def _seed_arguments(data: dict[str, Any]) -> dict[str, Any]:
    """``n`` a whole number up to MAX_SEED, ``prefix`` short text: one request cannot fill the memory."""
    n, prefix = data.get("n"), data.get("prefix", "Customer")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_SEED:
        raise ValueError(f"n must be a whole number from 0 to {MAX_SEED}")
    if not isinstance(prefix, str) or len(prefix) > MAX_PREFIX:
        raise ValueError(f"prefix must be text of at most {MAX_PREFIX} characters")
    return data


def _json_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data
