"""Stripe's events for changes made in Stripe itself, signed and sent to a site's webhook endpoint.

A change made in the dashboard or the Billing Portal (``FakeStripeServer.change_customer``,
``create_customer``, ``remove_customer``) gives the event Stripe sends for it
(``customer_event``): ``customer.updated`` with ``data.previous_attributes``,
``customer.created``, ``customer.deleted``; ``account`` names a connected
account whose customer it is. A change made through the API gives the same
events, whose ``request`` names the API request.

``sign_event`` encodes an event as Stripe's webhook sender does (JSON indented
by two spaces, UTF-8) and signs it as Stripe does: ``Stripe-Signature:
t=<seconds>,v1=<HMAC-SHA256 of "<t>.<body>">``, one ``v1`` per secret (several
while a secret is rolled). ``post_event`` sends a signed event over HTTP as
Stripe does (a POST, redirects not followed) and answers a ``Delivery``.

The signature is computed here with the standard library, not with the app's
``customersync.webhooks.sign``: the fake is the independent check on the
app's verification.

Public names: ``USER_AGENT``, ``CONTENT_TYPE``, ``previous_attributes``, ``customer_event``,
``SignedEvent``, ``sign_event``, ``Delivery``, ``check_url``, ``post_event``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import http.client
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .handler import DEFAULT_API_VERSION
from .rules import random_id

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
CONTENT_TYPE = "application/json; charset=utf-8"
# What a delivery keeps of the endpoint's answer.
_MAX_ANSWER = 65536


def previous_attributes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What ``data.previous_attributes`` says of a change from ``before`` to ``after``.

    Each changed field with its value before; within an object on both sides
    (``metadata``, ``address``, ``invoice_settings``) only its changed keys,
    a key that was not there as ``None``.
    """
    changed: dict[str, Any] = {}
    for name in [*after, *(name for name in before if name not in after)]:
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            changed[name] = previous_attributes(old, new)
        else:
            changed[name] = copy.deepcopy(old)
    return changed


def customer_event(
    kind: str,
    obj: Mapping[str, Any],
    *,
    previous: Mapping[str, Any] | None = None,
    account: str | None = None,
    api_version: str = DEFAULT_API_VERSION,
    created: int | None = None,
    request: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """The event Stripe makes when a customer is changed: ``kind`` (``customer.updated`` ...), ``obj``
    as ``data.object``, ``previous`` as ``data.previous_attributes``, ``account`` for a connected
    account's customer, ``livemode`` the customer's, ``request`` the API request that made the change
    (``id`` and ``idempotency_key``; None: the dashboard's own request)."""
    event: dict[str, Any] = {"id": random_id("evt_", 24), "object": "event"}
    if account is not None:
        event["account"] = account
    data: dict[str, Any] = {"object": copy.deepcopy(dict(obj))}
    if previous is not None:
        data["previous_attributes"] = copy.deepcopy(dict(previous))
    event.update(
        {
            "api_version": api_version,
            "created": int(time.time()) if created is None else created,
            "data": data,
            "livemode": bool(obj.get("livemode", False)),
            "pending_webhooks": 1,
            # Without an API request, the dashboard's own: its id and an idempotency key of its own.
            "request": (
                {"id": random_id("req_"), "idempotency_key": str(uuid.uuid4())} if request is None else dict(request)
            ),
            "type": kind,
        }
    )
    return event


@dataclass(frozen=True)
class SignedEvent:
    """An event as the bytes Stripe sends and its ``Stripe-Signature`` header (None: no secret, no header)."""

    body: bytes
    signature: str | None
    timestamp: int

    def headers(self) -> dict[str, str]:
        """The headers Stripe's webhook sender sends with it."""
        headers = {"Content-Type": CONTENT_TYPE, "User-Agent": USER_AGENT}
        if self.signature is not None:
            headers["Stripe-Signature"] = self.signature
        return headers


def sign_event(event: Mapping[str, Any], secrets: str | Iterable[str], *, timestamp: int | None = None) -> SignedEvent:
    """``event`` encoded as Stripe encodes it and signed with each of ``secrets`` (one ``v1`` each).

    No secret at all gives no ``Stripe-Signature`` header: what an endpoint gets from a sender
    that does not know its secret.
    """
    body = json.dumps(event, indent=2).encode()
    stamp = int(time.time()) if timestamp is None else int(timestamp)
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if any(not isinstance(key, str) or not key for key in keys):
        raise ValueError("each webhook secret must be a non-empty string")
    signed = f"{stamp}.".encode() + body
    signatures = [hmac.new(key.encode(), signed, hashlib.sha256).hexdigest() for key in keys]
    header = ",".join([f"t={stamp}", *(f"v1={signature}" for signature in signatures)]) if signatures else None
    return SignedEvent(body, header, stamp)


@dataclass(frozen=True)
class Delivery:
    """One event sent to one URL: the exact bytes and signature sent, and the answer (``status``
    and up to 64 KiB of body), or ``error`` when no answer came (refused, timed out)."""

    url: str
    event_id: str
    type: str
    body: bytes
    signature: str | None
    status: int | None
    response: bytes
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the endpoint took it (a 2xx answer), as Stripe counts a delivery."""
        return self.status is not None and 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "event": self.event_id,
            "type": self.type,
            "body": self.body.decode(),
            "signature": self.signature,
            "status": self.status,
            "response": self.response.decode("utf-8", "replace"),
            "error": self.error,
        }


def check_url(url: object) -> str:
    """``url`` if it is an ``http://`` or ``https://`` URL with a host; ValueError otherwise."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"a webhook URL is http://host[:port]/path or https://..., not {url!r}")
    try:
        parts.port  # noqa: B018 (a port out of range raises here, not when sending)
    except ValueError as exc:
        raise ValueError(f"a webhook URL with a bad port: {url!r}") from exc
    return str(url)


def post_event(event: Mapping[str, Any], signed: SignedEvent, url: str, *, timeout: float = 10.0) -> Delivery:
    """POST ``signed`` to ``url`` as Stripe's webhook sender does; a redirect is an answer, not followed."""
    parts = urlsplit(check_url(url))
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    status: int | None = None
    answer, error = b"", None
    try:
        connection.request("POST", target, body=signed.body, headers=signed.headers())
        response = connection.getresponse()
        status, answer = response.status, response.read(_MAX_ANSWER)
    except (OSError, http.client.HTTPException) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()
    return Delivery(
        url=url,
        event_id=str(event.get("id")),
        type=str(event.get("type")),
        body=signed.body,
        signature=signed.signature,
        status=status,
        response=answer,
        error=error,
    )
