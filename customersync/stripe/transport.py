"""How the client's bytes travel: a total deadline per request, and a cap on the answer's size.

requests' ``timeout`` bounds the connect and each socket read, so a server that
sends a byte a second keeps a call alive forever. The per-customer lease needs
every request to end by a known time, so ``StripeClient`` runs each request
under a ``Watchdog``: a timer that, when the deadline passes, shuts down the
TCP connection the request uses, whatever it is doing (connecting, the TLS
handshake, sending, waiting for the status line, reading headers or body).
The blocked read or write in the calling thread then fails at once.

The watchdog finds the connection through ``DeadlineAdapter``: its urllib3
connections claim the running watchdog (a context variable of the calling
thread) when they connect or send a request. Each connection keeps a
duplicate of its socket's descriptor for the watchdog, so the shutdown reaches
the connection whichever object wraps it at that moment (the TLS socket
replaces the plain one during the handshake; a ``Connection: close`` answer
hands the socket to the response), and never races a close that would free
the descriptor's number for an unrelated socket: the duplicate is closed only
under the same lock. A connection whose request was cut is closed before it
goes back to the pool; one returned to the pool is released by its watchdog
first, so a late timer never touches the next request's connection.

The body is read in chunks (``stream=True``) so that an answer larger than
``MAX_RESPONSE_BYTES``, or one that never ends, fails at the cap instead of
filling the memory.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

logger = logging.getLogger("customersync")

# The most the client reads of one answer. Stripe's customer objects and list
# pages are far smaller; anything larger is not an answer this app can use.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_CHUNK_BYTES = 64 * 1024
_DIGITS = re.compile(r"[0-9]{1,20}")

# Guards every watchdog's state, the connections' claims and their duplicate descriptors.
_LOCK = threading.RLock()
_CURRENT: ContextVar[Watchdog | None] = ContextVar("customersync_watchdog", default=None)


class MalformedResponse(Exception):
    """The answer's framing cannot be trusted (``reason`` says why): it is not read."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ResponseTooLarge(Exception):
    """The answer is (or would be) larger than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class _Deadlines:
    """One thread fires every watchdog of the process at its deadline: a timer thread started per
    request cost more than a request to a server on loopback. Finished watchdogs are dropped
    when they reach the front, or all at once when they outnumber the live ones."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Watchdog]] = []
        self._order = itertools.count()
        self._finished = 0
        self._thread: threading.Thread | None = None

    def add(self, watchdog: Watchdog) -> None:
        with self._cond:
            heapq.heappush(self._heap, (watchdog.expires, next(self._order), watchdog))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="customersync-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is watchdog:
                self._cond.notify()  # sooner than the one the thread waits for

    def finished(self) -> None:
        with self._cond:
            self._finished += 1
            if self._finished > 64 and self._finished * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2]._done]
                heapq.heapify(self._heap)
                self._finished = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2]._done:
                        heapq.heappop(self._heap)
                        self._finished = max(self._finished - 1, 0)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        watchdog = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(delay)
            watchdog._fire()


_DEADLINES = _Deadlines()


def _new_deadlines() -> None:
    """In a forked child: the parent's deadline thread is not there, nor are its requests."""
    global _DEADLINES
    _DEADLINES = _Deadlines()


os.register_at_fork(after_in_child=_new_deadlines)


class Watchdog:
    """Cuts the connection of the request in flight once ``seconds`` have passed.

    Use it as a context manager around one request, body included. ``cut`` is
    True when the deadline passed before the answer was complete: the
    connection was shut down (or will be, as soon as it exists) and is never
    reused.
    """

    def __init__(self, seconds: float, written: Callable[[], None] | None = None) -> None:
        self.seconds = seconds
        self.written = written  # called once, when the request is written (or its write failed)
        self.expires = time.monotonic() + seconds
        self.fired = False
        self.cut = False
        self._done = False
        self._connection: _Watched | None = None
        self._orphans: list[socket.socket] = []  # descriptors of connections closed while we held them
        self._token: Token[Watchdog | None] | None = None

    def remaining(self) -> float:
        return max(self.expires - time.monotonic(), 0.0)

    def __enter__(self) -> Watchdog:
        self._token = _CURRENT.set(self)
        _DEADLINES.add(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with _LOCK:
            self._done = True
            connection = self._connection
            if connection is not None and connection._cs_watchdog is self:
                connection._cs_watchdog = None
            self._connection = None
            orphans, self._orphans = self._orphans, []
        for orphan in orphans:
            orphan.close()
        _DEADLINES.finished()
        if self._token is not None:
            _CURRENT.reset(self._token)

    def _fire(self) -> None:
        with _LOCK:
            if self._done:
                return
            self.fired = True
            connection = self._connection
            if connection is None or connection._cs_watchdog is not self:
                return  # no connection yet (claiming one will cut it), or the answer is complete
            self.cut = True
            _shutdown(connection._cs_dup)
            for orphan in self._orphans:
                _shutdown(orphan)

    def _claim(self, connection: _Watched) -> None:
        """``connection`` now carries this watchdog's request (called under ``_LOCK``)."""
        previous = connection._cs_watchdog
        if previous is not None and previous is not self:
            previous._connection = None
        connection._cs_watchdog = self
        self._connection = connection
        if self.fired and not self._done:
            self.cut = True
            _shutdown(connection._cs_dup)


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed or never connected


def _claim(connection: _Watched) -> None:
    watchdog = _CURRENT.get()
    if watchdog is not None:
        with _LOCK:
            watchdog._claim(connection)


def _written() -> None:
    """The running request is written, or failed while being written: call its ``written``, once."""
    watchdog = _CURRENT.get()
    if watchdog is None or watchdog.written is None:
        return
    written, watchdog.written = watchdog.written, None
    try:
        written()
    except Exception as err:  # noqa: BLE001 - the request is on its way: a failed note must not fail it
        logger.warning("Could not note a request to Stripe as written: %s.", type(err).__name__)


def _release(connection: object) -> None:
    """Before ``connection`` goes back to its pool: detach its watchdog, and close it if its request was cut."""
    if not isinstance(connection, _Watched):
        return
    with _LOCK:
        watchdog, connection._cs_watchdog = connection._cs_watchdog, None
        if watchdog is not None and watchdog._connection is connection:
            watchdog._connection = None
        if watchdog is not None and watchdog.cut:
            connection.close()


class _Watched(HTTPConnection):
    """A urllib3 connection its request's watchdog can shut down."""

    _cs_watchdog: Watchdog | None = None
    _cs_dup: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        with _LOCK:
            if self._cs_dup is not None:
                self._cs_dup.close()
            self._cs_dup = sock.dup()
            watchdog = self._cs_watchdog
            if watchdog is not None and watchdog.fired and not watchdog._done:
                watchdog.cut = True
                _shutdown(self._cs_dup)
        return sock

    def connect(self) -> None:
        _claim(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _claim(self)
        try:
            super().request(*args, **kwargs)
        finally:
            _written()

    def close(self) -> None:
        with _LOCK:
            try:
                super().close()
            finally:
                dup, self._cs_dup = self._cs_dup, None
                watchdog = self._cs_watchdog
                if dup is not None and watchdog is not None and not watchdog._done:
                    # A "Connection: close" answer is still being read through this socket.
                    watchdog._orphans.append(dup)
                elif dup is not None:
                    dup.close()


class _WatchedHTTPS(_Watched, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Watched

    def _put_conn(self, conn: Any) -> None:
        _release(conn)
        super()._put_conn(conn)


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPS

    def _put_conn(self, conn: Any) -> None:
        _release(conn)
        super()._put_conn(conn)


_POOL_CLASSES: dict[str, type[HTTPConnectionPool]] = {"http": _Pool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter, with connections a ``Watchdog`` can cut (direct, or through an HTTP proxy)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS has connection classes of its own
            manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager


def declared_length(response: requests.Response) -> int | None:
    """The body's length as the answer declares it (None: not declared). ``MalformedResponse`` for a
    ``Content-Length`` that is not a number in ASCII digits (``²`` is a digit to ``str.isdigit``, not
    to ``int``), or several that disagree: HTTP makes such framing an error the client may not read past."""
    declared = response.headers.get("Content-Length")
    if declared is None:
        return None
    values = {value.strip() for value in declared.split(",")}  # a header repeated arrives joined
    if len(values) != 1 or not all(_DIGITS.fullmatch(value) for value in values):
        raise MalformedResponse(f"its Content-Length is not one number ({declared[:40]!r})")
    return int(values.pop())


def read_body(response: requests.Response, limit: int) -> bytes:
    """The whole body of a ``stream=True`` response; ``ResponseTooLarge`` past ``limit`` bytes,
    ``MalformedResponse`` when its declared length is no length."""
    declared = declared_length(response)
    if declared is not None and declared > limit:
        raise ResponseTooLarge(limit)
    body = bytearray()
    for chunk in response.iter_content(_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise ResponseTooLarge(limit)
    return bytes(body)
