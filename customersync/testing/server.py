"""``FakeStripeServer``: the fake Stripe customers API on a local port.

The server owns the state (the accounts with their customer stores and
idempotency keys, the platforms and their keys, the request log, pending
faults, latency and rate limits, all behind one lock) and the lifecycle. It
serves HTTP through ``handler``, which sees only a narrow ``_Backend``
(``handle`` and ``control``), never the server's internals, and it decides
every API answer in ``_handle``: on arrival the account the request is
addressed to (``accounts``) and its rate limit, then latency and faults, then
authentication (again, so a key retired meanwhile is refused), idempotency
and the route, in that account's store.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

from .accounts import _Accounts, _fingerprint, _livemode, _rate_limited
from .api import _route
from .control import _control
from .errors import FakeStripeAPIError, _invalid
from .faults import _Fault, _FaultQueue, _make_fault
from .handler import _Backend, _HTTPServer, _require_loopback, is_loopback_host
from .idempotency import _in_progress
from .messages import (
    DEFAULT_API_VERSION,
    Headers,
    RecordedRequest,
    _Abort,
    _bearer_key,
    _error_response,
    _merge_headers,
    _Response,
    _with_api_headers,
)
from .requestlog import _RequestLog
from .state import _StateMethods

# Everything the single-module fake exported, still importable from here.
__all__ = [
    "DEFAULT_API_VERSION",
    "FakeStripeServer",
    "Headers",
    "RecordedRequest",
    "is_loopback_host",
]

# How often the serve loop checks for shutdown: stop() waits up to this long.
_POLL_INTERVAL = 0.02


class FakeStripeServer(_StateMethods):
    """An in-memory Stripe customers API on a local port.

    Use it as a context manager (``with FakeStripeServer() as server:``) or
    call ``start()``/``stop()``; ``url`` is valid from construction, since the
    port is bound there. ``api_key=None`` accepts any ``sk_test_`` key, until
    a platform is registered (``add_platform``: see ``accounts``). The state
    helpers take ``account=`` for an account's own store (None: the default).
    It binds only loopback addresses unless ``allow_non_loopback=True``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        *,
        on_request: Callable[[RecordedRequest], None] | None = None,
        allow_non_loopback: bool = False,
    ) -> None:
        if not allow_non_loopback:
            _require_loopback(host)  # a fake that takes any test key stays off reachable interfaces
        self._on_request = on_request
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._accounts = _Accounts(api_key)
        self._log = _RequestLog(self._lock)
        self._latency: tuple[float, float] = (0.0, 0.0)
        self._faults = _FaultQueue()
        self._serving = False
        self._thread: threading.Thread | None = None
        # The handler gets these two callables and nothing else of the server.
        self._httpd = _HTTPServer((host, port), _Backend(handle=self._handle, control=partial(_control, self)))

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
        latency and rate limits; platforms, their keys and connected accounts stay."""
        with self._lock:
            self._accounts.clear()
            self._log.clear()
            self._faults.clear()
            self._latency = (0.0, 0.0)

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

    # faults, latency and the API key (platforms, keys and rate limits: _StateMethods)

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
        (``error`` or a default); ``headers`` are added to whatever is answered;
        ``delay`` waits first; ``action`` is ``"drop"`` (close, nothing applied),
        ``"drop_after"`` (apply, then close), ``"reset"`` (TCP RST), or applies
        the request and then sends its answer ``"trickle"`` (the body one byte
        every ``trickle`` seconds, default 1), ``"trickle_headers"`` (status
        line and headers too) or ``"endless"`` (a chunked body that never ends).
        Faults are consumed first-in first-out; ``method=None`` matches any method,
        ``account=None`` any account (else only requests acting on that ``acct_``).
        """
        fault = _make_fault(
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

    # answering API requests: the handler's _Backend (called from handler threads)

    @contextmanager
    def _handle(self, record: RecordedRequest, params_ok: bool) -> Iterator[_Response | _Abort]:
        """Decide and log the outcome of an API request; the handler delivers it inside the ``with``.

        Leaving the ``with``, once the answer is written (or the connection
        dropped), releases the request's Idempotency-Key and calls ``on_request``.
        """
        limited = self._arrive(record)
        key = record.idempotency_key if record.method == "POST" else None
        scope = record.account  # Idempotency-Keys are per account, like Stripe's
        if limited or (key is not None and not self._begin_key(scope, key)):
            yield self._decided(record, _rate_limited(scope) if limited else _in_progress(str(key)))
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
        key = _bearer_key(record.headers)
        record.key_fingerprint = _fingerprint(key)
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
        self, record: RecordedRequest, params_ok: bool, fault: _Fault | None, latency: float
    ) -> _Response | _Abort:
        """Wait out latency and any fault delay, then apply the fault or execute the request."""
        if latency and self._stopping.wait(latency):
            return _Abort(reset=False)
        if fault is not None and fault.delay > 0 and self._stopping.wait(fault.delay):
            return _Abort(reset=False)  # stop() interrupted the delay
        if fault is not None and fault.action in ("drop", "reset"):
            return _Abort(reset=fault.action == "reset")
        if fault is not None and fault.status is not None:
            response = fault.response()
            response.headers = _merge_headers(response.headers, fault.headers)
            return response
        response = self._execute(record, params_ok)
        if fault is not None and fault.action == "drop_after":
            return _Abort(reset=False)  # applied (and cached), never answered
        return response if fault is None else fault.shape(response)

    def _decided(self, record: RecordedRequest, outcome: _Response | _Abort) -> _Response | _Abort:
        """Log the outcome, before it is delivered, so a client never outruns the log."""
        if isinstance(outcome, _Abort):
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

    def _execute(self, record: RecordedRequest, params_ok: bool) -> _Response:
        """Authenticate, then route the request in its account, honouring Idempotency-Key on POST."""
        api_key = _bearer_key(record.headers)
        key = record.idempotency_key if record.method == "POST" else None
        # One lock around check, execution and caching: requests sharing a key are serialized.
        with self._lock:
            try:
                # Checked now, not on arrival: a key retired while the request waited is refused.
                account = self._accounts.account(self._accounts.resolve(api_key, record.headers))
            except FakeStripeAPIError as error:
                auth = {"WWW-Authenticate": 'Bearer realm="Stripe"'} if error.status == 401 else {}
                return _error_response(error, auth)
            if not params_ok:
                return _error_response(_invalid("Invalid request body: expected UTF-8 form encoding", None))
            route = partial(_route, account.store, record, livemode=_livemode(api_key))
            return route() if key is None else account.idempotency.answer(record, key, route)
