"""Test helpers shipped with customersync: a fake Stripe customers API (stdlib only).

Run it as a command with ``python -m customersync.testing``.

A fake Stripe server speaking the customer endpoints, for tests and demos.
Stdlib only: this package ships inside the app wheel, so projects using the app
can test their Stripe traffic without network access or extra dependencies.

It keeps customers in memory with Stripe's update semantics (``''`` unsets,
metadata per-key unsets, whole-object replacement of addresses, ...), answers
Stripe-shaped errors naming the bad ``param``, honours ``Idempotency-Key``,
records every request byte for byte, and can inject faults (error statuses,
garbage bodies, delays, dropped or reset connections, answers trickled a byte
at a time or never ending). A small control API under ``/_fake/`` lets another
process drive it over HTTP, with the server's API key and the
``X-Fake-Stripe-Control: 1`` header (``control_headers``). It binds only
loopback addresses unless told otherwise.

It can play several Stripe accounts: platforms with their test and live
keys (rotated with ``set_platform_keys``) and connected accounts reached with
a ``Stripe-Context`` header, each account with its own customers and
idempotency keys, faults and rate limits aimed at one account. Without a
platform it takes one key, or any ``sk_test_`` key.

It plays Stripe's side of the webhooks too: a change made in Stripe itself
(the dashboard, the Billing Portal: ``change_customer``, ``create_customer``,
``remove_customer``) gives the event Stripe would send, and ``forward_to``
sends each one, signed with the site's webhook secret, to the site's webhook
URL, as ``stripe listen --forward-to`` does (``send_event``: one event once).
Every change, through the API too, is kept in its account's events log, listed
by ``GET /v1/events`` as Stripe lists them; deliveries can be held and resumed
(an outage of the site's endpoint).

It does not use the app's ``customersync.core.params``: it is the independent check
on the app, so only ``customersync.core.encoding`` (form encoding) is shared.

Modules:

- ``server``: ``FakeStripeServer``: its lifecycle, its state and the helpers that read and set
  it directly, the request log and the waits on it, and the answer to each API request
- ``handler``: the HTTP server and request handler, the ``Backend`` interface between them and
  the server, and requests and responses as data (``Headers``, ``RecordedRequest``)
- ``accounts``: platforms, keys, connected accounts, the account a request acts on, rate limits,
  and each account's ``Idempotency-Key`` handling
- ``store``: the customers, the API operations on them and seed data, and the ``/v1`` routes
- ``rules``: the customer object, parameter validation, Stripe's update semantics, and
  ``FakeStripeAPIError`` with the errors the API answers
- ``faults``: injected faults
- ``events``: the events of changes made in Stripe, signed as Stripe signs them, and their delivery
- ``eventlog``: every account's events, their retention and delivery state, and ``GET /v1/events``
- ``control``: the ``/_fake/`` control API
- ``pytest_plugin``: the ``fake_stripe`` fixture for sites' own tests
"""

from .control import CONTROL_HEADER, control_headers
from .events import Delivery, SignedEvent, sign_event
from .handler import DEFAULT_API_VERSION, Headers, RecordedRequest, is_loopback_host
from .rules import FakeStripeAPIError
from .server import FakeStripeServer

__all__ = [
    "CONTROL_HEADER",
    "DEFAULT_API_VERSION",
    "Delivery",
    "FakeStripeAPIError",
    "FakeStripeServer",
    "Headers",
    "RecordedRequest",
    "SignedEvent",
    "control_headers",
    "is_loopback_host",
    "sign_event",
]
