"""``FakeStripeServer``: the fake Stripe customers API on a local port.

The server owns the state (the accounts with their customer stores and
idempotency keys, the platforms and their keys, the request log, pending
faults, latency and rate limits, all behind one lock) and the lifecycle. It
serves HTTP through ``handler``, which sees only a narrow ``Backend``
(``handle`` and ``control``), never the server's internals, and it decides
every API answer in ``_handle``: on arrival the account the request is
addressed to (``accounts``) and its rate limit, then latency and faults, then
authentication (again, so a key retired meanwhile is refused), idempotency
and the route, in that account's store.

A test also reads and sets the state directly, not over HTTP and not logged:
customers in any account's store (``account=None``: the legacy default store)
and the accounts themselves (platforms, their keys and connected accounts, key
rotation and rate limits). The request log keeps API requests as they arrive
and as their outcomes are decided: a request is logged once its outcome is
decided, just before the response is written or the connection dropped, so a
client never outruns the log; arrivals are counted earlier, before any latency
or delay.

Changes made in Stripe itself (the dashboard, the Billing Portal:
``change_customer``, ``create_customer``, ``remove_customer``) are not API
requests either: each gives the event Stripe would send (``events``), kept in
``events`` and, once ``forward_to`` names a site's webhook URL, sent there
signed before the method returns (``deliveries``), as ``stripe listen
--forward-to`` does; ``send_event`` sends one event once.

Every change to a customer, through the API or in Stripe, is an event in its
account's log (``eventlog``), answered by ``GET /v1/events``; a change made
through the API names its request and is not forwarded. ``hold_deliveries``
keeps events from the ``forward_to`` URL, as an outage of the site's endpoint
would, and ``resume_deliveries`` sends what is pending; ``advance_clock`` and
``set_event_retention`` age events out of the retention window without a test
sleeping.

Public names: ``FakeStripeServer``.
"""

from __future__ import annotations

import copy
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any
from urllib.parse import unquote

from ..core.encoding import decode, encode
from .accounts import Accounts, bearer_key, in_progress, is_live_key, key_fingerprint, rate_limited
from .control import answer_control
from .eventlog import DELIVERED, FAILED, HELD, NO_ENDPOINT, SENDING, EventLog
from .events import Delivery, check_url, customer_event, post_event, previous_attributes, sign_event
from .faults import Fault, FaultQueue, make_fault
from .handler import (
    DEFAULT_API_VERSION,
    Abort,
    Backend,
    FakeHTTPServer,
    RecordedRequest,
    Response,
    json_bytes,
    merge_headers,
    require_loopback,
)
from .rules import Customer, FakeStripeAPIError, invalid, random_id
from .store import CustomerStore, error_response, route

_CUSTOMER_PATH = re.compile(r"/v1/customers/([^/]+)")
_EVENT_PATH = re.compile(r"/v1/events/([^/]+)")


def _with_api_headers(record: RecordedRequest, response: Response) -> Response:
    """``response`` with the headers every API answer carries (its own take precedence)."""
    version = record.headers.get("Stripe-Version") or DEFAULT_API_VERSION
    headers = merge_headers(
        {
            "Content-Type": "application/json",
            "Request-Id": random_id("req_"),
            "Stripe-Version": version,
        },
        response.headers,
    )
    return replace(response, headers=headers)


class _RequestLog:
    """Logged requests (``entries``) and ``arrivals``, guarded by the server's lock."""

    def __init__(self, lock: threading.RLock) -> None:
        self.changed = threading.Condition(lock)
        self.entries: list[RecordedRequest] = []
        self.arrivals: list[RecordedRequest] = []

    def arrived(self, record: RecordedRequest) -> None:
        with self.changed:
            self.arrivals.append(record)
            self.changed.notify_all()

    def decided(self, record: RecordedRequest) -> None:
        with self.changed:
            record.finished = time.monotonic()
            self.entries.append(record)
            self.changed.notify_all()

    def clear(self) -> None:
        with self.changed:
            self.entries.clear()
            self.arrivals.clear()

    def wait_for(
        self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float, what: str
    ) -> list[RecordedRequest]:
        with self.changed:
            if self.changed.wait_for(lambda: predicate(list(self.entries)), timeout):
                return list(self.entries)
            received = self._received()
        raise TimeoutError(f"waited {timeout:g}s for {what}; all requests received:\n{received}")

    def wait_for_requests(
        self, count: int, timeout: float, method: str | None, path_prefix: str | None, *, arrivals: bool
    ) -> list[RecordedRequest]:
        """Wait for ``count`` matching entries (or ``arrivals``); TimeoutError lists what was received."""
        wanted_method = method.upper() if method else None

        def matching() -> list[RecordedRequest]:
            return [
                r
                for r in (self.arrivals if arrivals else self.entries)
                if (wanted_method is None or r.method == wanted_method)
                and (path_prefix is None or r.path.startswith(path_prefix))
            ]

        with self.changed:
            if self.changed.wait_for(lambda: len(matching()) >= count, timeout):
                return matching()
            found = len(matching())
            received = self._received()
        wanted = f"{wanted_method or 'any method'} {path_prefix or ''}*"
        raise TimeoutError(
            f"waited {timeout:g}s for {count} request(s) matching {wanted}, "
            f"got {found}; all requests received:\n{received}"
        )

    def _received(self) -> str:
        return "\n".join(f"  {r.summary()}" for r in self.entries) or "  (none)"


# How often the serve loop checks for shutdown: stop() waits up to this long.
_POLL_INTERVAL = 0.02


class FakeStripeServer:
    """An in-memory Stripe customers API on a local port.

    Use it as a context manager (``with FakeStripeServer() as server:``) or
    call ``start()``/``stop()``; ``url`` is valid from construction, since the
    port is bound there. ``api_key=None`` accepts any ``sk_test_`` key, until
    a platform is registered (``add_platform``: see ``accounts``). The state
    helpers take ``account=`` for an account's own store (None: the default).
    It binds only loopback addresses unless ``allow_non_loopback=True``.
    ``on_request`` is called with each logged request, ``on_delivery`` with
    each event sent to a webhook URL.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        *,
        on_request: Callable[[RecordedRequest], None] | None = None,
        on_delivery: Callable[[Delivery], None] | None = None,
        allow_non_loopback: bool = False,
    ) -> None:
        if not allow_non_loopback:
            require_loopback(host)  # a fake that takes any test key stays off reachable interfaces
        self._on_request = on_request
        self._on_delivery = on_delivery
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._accounts = Accounts(api_key)
        self._log = _RequestLog(self._lock)
        self._latency: tuple[float, float] = (0.0, 0.0)
        self._faults = FaultQueue()
        self._events = EventLog()
        self._held = False  # webhook deliveries held: an outage of the site's endpoint
        self._deliveries: list[Delivery] = []
        # Where events go as they happen, and the secrets they are signed with (never shown).
        self._forward: tuple[str, tuple[str, ...]] | None = None
        self._serving = False
        self._thread: threading.Thread | None = None
        # The handler gets these two callables and nothing else of the server.
        self._httpd = FakeHTTPServer(
            (host, port), Backend(handle=self._handle, control=partial(answer_control, self, self._authorized))
        )

    def __repr__(self) -> str:
        return f"<FakeStripeServer {self.url}>"

    # lifecycle

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def start(self) -> FakeStripeServer:
        """Serve in a daemon thread; returns self."""
        if self._thread is None:
            self._serving = True
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                args=(_POLL_INTERVAL,),
                name=f"fake-stripe {self.url}",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop()`` (or an exception such as KeyboardInterrupt)."""
        self._serving = True
        self._httpd.serve_forever(_POLL_INTERVAL)

    def stop(self) -> None:
        """Stop serving, interrupt pending delays and close open connections."""
        self._stopping.set()
        if self._serving:
            self._serving = False
            self._httpd.shutdown()  # only safe once serve_forever has been entered
        self._httpd.server_close()
        self._httpd.shutdown_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeStripeServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # state

    def reset(self) -> None:
        """Forget customers (of every account), logged requests, pending faults, idempotency keys,
        latency, rate limits, events and deliveries; the events' retention window and clock go back
        to their defaults and held deliveries resume; platforms, their keys, connected accounts
        and the ``forward_to`` URL stay."""
        with self._lock:
            self._accounts.clear()
            self._log.clear()
            self._faults.clear()
            self._latency = (0.0, 0.0)
            self._events.clear()
            self._held = False
            self._deliveries.clear()

    # customers and accounts, set and read directly (not logged)

    @property
    def customers(self) -> dict[str, dict[str, Any]]:
        """Copy of the default store, id -> object in insertion order (deleted ones as their stub)."""
        return self.customers_of(None)

    def add_customer(self, *, account: str | None = None, **fields: Any) -> dict[str, Any]:
        """Store a customer directly (not logged). Accepts ``id=`` and any customer-object field."""
        with self._lock:
            return self._accounts.account(account).store.add(fields).render()

    def get_customer(self, customer_id: str, account: str | None = None) -> dict[str, Any] | None:
        """The stored object (a deep copy), the deleted stub, or None."""
        with self._lock:
            customer = self._accounts.account(account).store.customers.get(customer_id)
            return None if customer is None else customer.render()

    def seed(self, n: int, prefix: str = "Customer", account: str | None = None) -> list[dict[str, Any]]:
        """Store ``n`` plausible customers, deterministic given ``n`` (description ``"<prefix> <i>"``)."""
        with self._lock:
            return [customer.render() for customer in self._accounts.account(account).store.seed(int(n), prefix)]

    def attach_source(
        self, customer_id: str, source_id: str, kind: str | None = None, *, account: str | None = None
    ) -> dict[str, Any]:
        """Attach a source (``card_...``, ``ba_...``) to a customer without making it the default."""
        with self._lock:
            return copy.deepcopy(self._stored(customer_id, account).attach(source_id, kind))

    def update_customer_directly(self, customer_id: str, account: str | None = None, **params: Any) -> dict[str, Any]:
        """Apply an update as if another integration sent it (not logged, no idempotency, no event:
        ``change_customer`` gives one).

        ``params`` are update params as a client would pass them; they go through
        the wire encoding, so the same validation and semantics apply.
        """
        with self._lock:
            return self._accounts.account(account).store.update(customer_id, decode(encode(params)))

    def delete_customer(self, customer_id: str, account: str | None = None) -> dict[str, Any]:
        """Delete a customer as if from the dashboard (not logged, no event: ``remove_customer`` gives one)."""
        with self._lock:
            return self._accounts.account(account).store.delete(customer_id, {})

    def sources(self, customer_id: str, account: str | None = None) -> list[dict[str, Any]]:
        """The sources attached to a customer."""
        with self._lock:
            return copy.deepcopy(list(self._stored(customer_id, account).sources.values()))

    def cash_balance_settings(self, customer_id: str, account: str | None = None) -> dict[str, Any]:
        """The customer's cash balance settings (never returned on the customer object)."""
        with self._lock:
            return dict(self._stored(customer_id, account).cash_balance_settings)

    def _stored(self, customer_id: str, account: str | None) -> Customer:
        customer = self._accounts.account(account).store.customers.get(customer_id)
        if customer is None:
            raise KeyError(customer_id)
        return customer

    def add_platform(self, account_id: str, keys: Iterable[str], *, connected: Iterable[str] = ()) -> None:
        """Register a platform ``acct_...`` whose API keys are ``keys`` (any of them authenticates),
        with its ``connected`` accounts.

        From the first platform on, only platforms' keys authenticate; the
        server's ``api_key`` no longer does (for the control API either).
        """
        with self._lock:
            self._accounts.add_platform(account_id, keys, connected)

    def forget_platforms(self) -> None:
        """Unregister every platform (and its retired keys): back to legacy mode, as a shared
        server must be after a test that registered some; customers stay until ``reset()``."""
        with self._lock:
            self._accounts.forget_platforms()

    def add_connected_account(self, platform: str, account_id: str) -> None:
        """Connect ``account_id`` to ``platform``: its keys reach it with a ``Stripe-Context`` header."""
        with self._lock:
            self._accounts.add_connected(platform, account_id)

    def set_platform_keys(self, account_id: str, keys: Iterable[str]) -> None:
        """Rotate a platform's keys: from now on only ``keys`` authenticate for it.

        A key it had before answers 401 "Expired API Key provided.", also to a
        request already in flight (keys are checked after latency and delays).
        """
        with self._lock:
            self._accounts.set_keys(account_id, keys)

    def set_rate_limit(self, account: str | None, per_second: int | None) -> None:
        """Answer 429 (``rate_limit``) to a request for ``account`` that arrives when
        ``per_second`` requests for it already arrived in the last second.

        Every arrival counts, the refused ones too, so a client that keeps
        sending stays refused until it pauses. ``None`` for ``per_second``
        lifts the limit; ``account=None`` limits legacy mode's default account.
        ``reset()`` lifts every limit.
        """
        with self._lock:
            self._accounts.set_rate_limit(account, per_second)

    def customers_of(self, account: str | None) -> dict[str, dict[str, Any]]:
        """Like ``customers``, for one account's store (None: the legacy default store)."""
        with self._lock:
            store = self._accounts.account(account).store
            return {cid: customer.render() for cid, customer in store.customers.items()}

    # changes made in Stripe itself, their events and their delivery

    def change_customer(self, customer_id: str, *, account: str | None = None, **params: Any) -> dict[str, Any]:
        """Change a customer as its owner does in the Billing Portal or an operator in the dashboard,
        and return the ``customer.updated`` event (``data.previous_attributes`` says what it was).

        ``params`` are the update's params in the API's shapes (``address={...}``,
        ``metadata={"k": "v"}``, ``email="..."``, ``""`` to unset), with its
        validation and semantics (``FakeStripeAPIError`` for what the API refuses).
        Not a logged request; the event is kept in ``events`` and sent to the
        ``forward_to`` URL, if any, before this returns.
        """
        with self._lock:
            store = self._accounts.account(account).store
            before = store.get_live(customer_id).render()
            after = store.update(customer_id, decode(encode(params)))
            previous = previous_attributes(before, after)
            event = customer_event(
                "customer.updated",
                after,
                previous=previous,
                account=self._accounts.event_account(account),
                created=self._events.next_created(),
            )
        return self._emit(event, account)

    def create_customer(self, *, account: str | None = None, **params: Any) -> dict[str, Any]:
        """Create a customer as the dashboard does, from the API's create params, and return
        its ``customer.created`` event (kept and forwarded as ``change_customer``'s)."""
        with self._lock:
            store = self._accounts.account(account).store
            created = store.create(decode(encode(params)))
            event = customer_event(
                "customer.created",
                created,
                account=self._accounts.event_account(account),
                created=self._events.next_created(),
            )
        return self._emit(event, account)

    def remove_customer(self, customer_id: str, *, account: str | None = None) -> dict[str, Any]:
        """Delete a customer as the dashboard does and return its ``customer.deleted`` event,
        whose ``data.object`` is the customer as it was (kept and forwarded as ``change_customer``'s).
        ``delete_customer`` deletes without an event."""
        with self._lock:
            store = self._accounts.account(account).store
            obj = store.get_live(customer_id).render()
            store.delete(customer_id, {})
            event = customer_event(
                "customer.deleted",
                obj,
                account=self._accounts.event_account(account),
                created=self._events.next_created(),
            )
        return self._emit(event, account)

    @property
    def events(self) -> list[dict[str, Any]]:
        """A copy of every event, of every account, oldest first, as made (and sent): the changes made
        in Stripe and through the API. ``GET /v1/events`` lists one account's, within the retention
        window, with ``pending_webhooks`` as their delivery stands."""
        with self._lock:
            return [copy.deepcopy(logged.event) for logged in self._events.entries]

    @property
    def deliveries(self) -> list[Delivery]:
        """The events sent to webhook URLs (``forward_to``, ``send_event``), in the order they were sent."""
        with self._lock:
            return list(self._deliveries)

    def forward_to(self, url: str | None, secret: str | Iterable[str] = ()) -> None:
        """Send each event given after this call to ``url``, signed with ``secret`` (a list while a
        secret is rolled: one ``v1`` each), before the change that gave it returns; ``None`` stops.

        What ``stripe listen --forward-to`` does, synchronously: a test reads the
        outcome in ``deliveries`` at once. A delivery that fails is recorded, never raised.
        """
        if url is None:
            with self._lock:
                self._forward = None
            return
        secrets = (secret,) if isinstance(secret, str) else tuple(secret)
        if not secrets:
            raise ValueError("forward_to needs the webhook signing secret the site verifies with")
        sign_event({}, secrets)  # refuses an empty or non-text secret here, not at the first event
        with self._lock:
            self._forward = (check_url(url), secrets)

    def send_event(
        self, event: dict[str, Any], url: str, secret: str | Iterable[str], *, timeout: float = 10.0
    ) -> Delivery:
        """POST ``event`` to ``url`` once, signed with ``secret`` as Stripe signs (no secret: unsigned),
        and return the ``Delivery`` (also kept in ``deliveries``)."""
        delivery = post_event(event, sign_event(event, secret), check_url(url), timeout=timeout)
        with self._lock:
            self._deliveries.append(delivery)
        if self._on_delivery is not None:
            self._on_delivery(delivery)
        return delivery

    def _emit(self, event: dict[str, Any], account: str | None) -> dict[str, Any]:
        """Log ``event`` in ``account``'s events, send it where ``forward_to`` says unless deliveries
        are held (outside the lock: the site may call the server while it handles it), and return a copy."""
        with self._lock:
            forward, held = self._forward, self._held
            event["pending_webhooks"] = 0 if forward is None else 1
            state = NO_ENDPOINT if forward is None else HELD if held else SENDING
            logged = self._events.add(event, account, state)
            made = copy.deepcopy(event)
        if forward is not None and not held:
            delivery = self.send_event(event, *forward)
            with self._lock:
                logged.delivery = DELIVERED if delivery.ok else FAILED
        return made

    # the events' clock and retention, and an outage of the site's webhook endpoint

    def clock(self) -> int:
        """The time (Unix seconds) events are stamped with and aged by: the machine's clock plus
        what ``advance_clock`` added."""
        with self._lock:
            return self._events.now()

    def advance_clock(self, seconds: int) -> None:
        """Move the events' clock forward by ``seconds`` (a whole number from 0): events made
        before are that much older, and may leave the retention window, without a test sleeping.
        ``reset()`` puts it back on the machine's clock."""
        with self._lock:
            self._events.advance(seconds)

    def set_event_retention(self, seconds: int | None) -> None:
        """Keep events for ``seconds`` (None: Stripe's 30 days): an older event is neither listed nor
        retrieved by ``GET /v1/events``, and a list cursor naming it is unknown."""
        with self._lock:
            self._events.set_retention(seconds)

    def hold_deliveries(self) -> None:
        """Hold webhook deliveries, as an outage of the site's endpoint would: each event made from
        now on is logged but not sent, pending (``delivery_success=false``) until ``resume_deliveries``."""
        with self._lock:
            self._held = True

    def resume_deliveries(self) -> list[Delivery]:
        """End the hold and send, oldest first, every event still pending (held, or refused by the
        site when sent) to the ``forward_to`` URL, as Stripe's retries do; return those deliveries.

        An event the site takes (2xx) is delivered (``delivery_success=true``,
        ``pending_webhooks`` 0); one it refuses stays pending, for the next call.
        Without a ``forward_to`` URL nothing is sent and the events stay pending.
        """
        with self._lock:
            self._held = False
            forward = self._forward
            waiting = self._events.undelivered() if forward is not None else []
            for logged in waiting:
                logged.delivery = SENDING
        deliveries = []
        for logged in waiting:
            assert forward is not None
            delivery = self.send_event(logged.event, *forward)
            with self._lock:
                logged.delivery = DELIVERED if delivery.ok else FAILED
            deliveries.append(delivery)
        return deliveries

    # request log

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the request log, in the order outcomes were decided."""
        with self._lock:
            return list(self._log.entries)

    def clear_requests(self) -> None:
        self._log.clear()

    def wait_for(
        self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float = 10.0, what: str = "a condition"
    ) -> list[RecordedRequest]:
        """Block until ``predicate(requests)`` holds, re-checked as each request is logged."""
        return self._log.wait_for(predicate, timeout, what)

    def wait_for_arrivals(
        self,
        count: int,
        timeout: float = 10.0,
        method: str | None = None,
        path_prefix: str | None = None,
    ) -> list[RecordedRequest]:
        """Like ``wait_for_requests``, but counts requests as soon as they arrive,
        before any latency or delay and before they are answered."""
        return self.wait_for_requests(count, timeout, method, path_prefix, _source="_arrivals")

    def wait_for_requests(
        self,
        count: int,
        timeout: float = 10.0,
        method: str | None = None,
        path_prefix: str | None = None,
        *,
        _source: str = "_log_entries",
    ) -> list[RecordedRequest]:
        """Block until at least ``count`` matching requests are logged; return the matching ones.

        Raises TimeoutError listing what was received instead.
        """
        return self._log.wait_for_requests(count, timeout, method, path_prefix, arrivals=_source == "_arrivals")

    # faults, latency and the API key

    def inject(
        self,
        *,
        status: int | None = None,
        body: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        error: Mapping[str, Any] | None = None,
        delay: float = 0.0,
        action: str | None = None,
        times: int = 1,
        method: str | None = "POST",
        path_prefix: str = "/v1/customers",
        trickle: float | None = None,
        account: str | None = None,
    ) -> None:
        """Queue a fault for the next ``times`` requests matching method, path prefix and ``account``.

        ``status`` answers that status with ``body`` (raw) or an error object
        (``error`` or a default); ``headers`` are added to whatever is answered (a
        ``Content-Length`` among them replaces the server's own, whatever it says, and the
        connection closes after the body: an answer framed as a hostile server frames it);
        ``delay`` waits first; ``action`` is ``"drop"`` (close, nothing applied),
        ``"drop_after"`` (apply, then close), ``"reset"`` (TCP RST), or applies
        the request and then sends its answer ``"trickle"`` (the body one byte
        every ``trickle`` seconds, default 1), ``"trickle_headers"`` (status
        line and headers too) or ``"endless"`` (a chunked body that never ends).
        Faults are consumed first-in first-out; ``method=None`` matches any method,
        ``account=None`` any account (else only requests acting on that ``acct_``).
        """
        fault = make_fault(
            status=status,
            body=body,
            headers=headers,
            error=error,
            delay=delay,
            action=action,
            times=times,
            method=method,
            path_prefix=path_prefix,
            trickle=trickle,
            account=account,
        )
        with self._lock:
            self._faults.add(fault)

    def set_latency(self, low: float, high: float | None = None) -> None:
        """Delay every API request by a random time in ``[low, high]`` seconds (0 turns it off)."""
        high = low if high is None else high
        if low < 0 or high < low:
            raise ValueError("need 0 <= low <= high")
        with self._lock:
            self._latency = (float(low), float(high))

    def set_api_key(self, api_key: str | None) -> None:
        """Change the key the server accepts in legacy mode (None: any ``sk_test_`` key)."""
        with self._lock:
            self._accounts.api_key = api_key

    def _authorized(self, key: str | None) -> bool:
        with self._lock:
            return self._accounts.authorized(key)

    # answering API requests: the handler's Backend (called from handler threads)

    @contextmanager
    def _handle(self, record: RecordedRequest, params_ok: bool) -> Iterator[Response | Abort]:
        """Decide and log the outcome of an API request; the handler delivers it inside the ``with``.

        Leaving the ``with``, once the answer is written (or the connection
        dropped), releases the request's Idempotency-Key and calls ``on_request``.
        """
        limited = self._arrive(record)
        key = record.idempotency_key if record.method == "POST" else None
        scope = record.account  # Idempotency-Keys are per account, like Stripe's
        if limited or (key is not None and not self._begin_key(scope, key)):
            yield self._decided(record, rate_limited(scope) if limited else in_progress(str(key)))
            self._report(record)
            return
        with self._lock:
            fault = self._faults.take(record.method, record.path, record.account)
        latency = self._draw_latency()
        try:
            yield self._decided(record, self._outcome(record, params_ok, fault, latency))
        finally:
            if key is not None:
                self._end_key(scope, key)
            self._report(record)

    def _arrive(self, record: RecordedRequest) -> bool:
        """Note the account the request is addressed to and log its arrival; True if over its rate limit."""
        key = bearer_key(record.headers)
        record.key_fingerprint = key_fingerprint(key)
        with self._lock:
            try:
                record.account = self._accounts.resolve(key, record.headers)
            except FakeStripeAPIError:
                record.account = None  # answered when it executes: the key may change meanwhile
                limited = False
            else:
                limited = self._accounts.over_limit(record.account, time.monotonic())
        self._log.arrived(record)
        return limited

    def _outcome(
        self, record: RecordedRequest, params_ok: bool, fault: Fault | None, latency: float
    ) -> Response | Abort:
        """Wait out latency and any fault delay, then apply the fault or execute the request."""
        if latency and self._stopping.wait(latency):
            return Abort(reset=False)
        if fault is not None and fault.delay > 0 and self._stopping.wait(fault.delay):
            return Abort(reset=False)  # stop() interrupted the delay
        if fault is not None and fault.action in ("drop", "reset"):
            return Abort(reset=fault.action == "reset")
        if fault is not None and fault.status is not None:
            response = fault.response()
            response.headers = merge_headers(response.headers, fault.headers)
            return response
        response = self._execute(record, params_ok)
        if fault is not None and fault.action == "drop_after":
            return Abort(reset=False)  # applied (and cached), never answered
        return response if fault is None else fault.shape(response)

    def _decided(self, record: RecordedRequest, outcome: Response | Abort) -> Response | Abort:
        """Log the outcome, before it is delivered, so a client never outruns the log."""
        if isinstance(outcome, Abort):
            self._log.decided(record)
            return outcome
        record.status = outcome.status
        self._log.decided(record)
        return _with_api_headers(record, outcome)

    def _begin_key(self, account: str | None, key: str) -> bool:
        with self._lock:
            return self._accounts.account(account).idempotency.begin(key)

    def _end_key(self, account: str | None, key: str) -> None:
        with self._lock:
            self._accounts.account(account).idempotency.end(key)

    def _draw_latency(self) -> float:
        with self._lock:
            low, high = self._latency
        return random.uniform(low, high) if high > 0 else 0.0

    def _report(self, record: RecordedRequest) -> None:
        if self._on_request is not None:
            self._on_request(record)

    def _execute(self, record: RecordedRequest, params_ok: bool) -> Response:
        """Authenticate, then route the request in its account, honouring Idempotency-Key on POST."""
        api_key = bearer_key(record.headers)
        key = record.idempotency_key if record.method == "POST" else None
        # One lock around check, execution and caching: requests sharing a key are serialized.
        with self._lock:
            try:
                # Checked now, not on arrival: a key retired while the request waited is refused.
                account_id = self._accounts.resolve(api_key, record.headers)
            except FakeStripeAPIError as error:
                auth = {"WWW-Authenticate": 'Bearer realm="Stripe"'} if error.status == 401 else {}
                return error_response(error, auth)
            account = self._accounts.account(account_id)
            if not params_ok:
                return error_response(invalid("Invalid request body: expected UTF-8 form encoding", None))
            if record.path == "/v1/events" or _EVENT_PATH.fullmatch(record.path):
                return self._answer_events(record, account_id)
            execute = partial(self._route_and_log, account.store, record, account_id, livemode=is_live_key(api_key))
            return execute() if key is None else account.idempotency.answer(record, key, execute)

    def _answer_events(self, record: RecordedRequest, account: str | None) -> Response:
        """``GET /v1/events`` and ``GET /v1/events/{id}`` in ``account``'s events (under the lock)."""
        one = _EVENT_PATH.fullmatch(record.path)
        try:
            if record.method != "GET":
                raise FakeStripeAPIError(404, f"Unrecognized request URL ({record.method}: {record.path}).")
            if one is None:
                payload = self._events.list_page(account, record.params)
            else:
                payload = self._events.retrieve(account, unquote(one.group(1)), record.params)
        except FakeStripeAPIError as error:
            return error_response(error)
        return Response(200, json_bytes(payload))

    def _route_and_log(
        self, store: CustomerStore, record: RecordedRequest, account: str | None, *, livemode: bool
    ) -> Response:
        """Answer the request in ``store`` (under the lock) and log the event of the change it made
        to a customer, if any, naming the request (its ``Request-Id`` and ``Idempotency-Key``).

        An update that changes nothing makes no event, as on Stripe."""
        target = _CUSTOMER_PATH.fullmatch(record.path)
        before = None
        if target is not None and record.method in ("POST", "DELETE"):
            stored = store.customers.get(unquote(target.group(1)))
            before = None if stored is None or stored.deleted else stored.render()
        response = route(store, record, livemode=livemode)
        if response.status != 200:
            return response
        previous = None
        if record.method == "POST" and record.path == "/v1/customers":
            kind, obj = "customer.created", store.customers[json.loads(response.body)["id"]].render()
        elif record.method == "POST" and target is not None and before is not None:
            kind, obj = "customer.updated", store.customers[before["id"]].render()
            previous = previous_attributes(before, obj)
            if not previous:
                return response
        elif record.method == "DELETE" and before is not None:
            kind, obj = "customer.deleted", before
        else:
            return response
        request_id = random_id("req_")
        response.headers["Request-Id"] = request_id
        event = customer_event(
            kind,
            obj,
            previous=previous,
            account=self._accounts.event_account(account),
            created=self._events.next_created(),
            request={"id": request_id, "idempotency_key": record.idempotency_key},
        )
        event["pending_webhooks"] = 0  # the fake forwards only changes made in Stripe
        self._events.add(event, account, NO_ENDPOINT)
        return response
