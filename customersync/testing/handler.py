"""HTTP for the fake: the listening server, the request handler, and requests and responses as data.

The handler only speaks HTTP. It reads a request, parses it into a
``RecordedRequest`` (recorded byte for byte: headers as sent, the raw body,
the params it decoded to and the status answered), passes it to the fake
through the narrow :class:`Backend` interface, and writes the ``Response`` the
fake decided on, or drops the connection (``Abort``). It knows nothing of
customers, faults, latency or idempotency, and never touches the fake's
internals. The HTTP server keeps track of open connections itself, so that
stopping the fake can shut them down.

Public names: ``Headers``, ``RecordedRequest``, ``Response``, ``Abort``,
``Backend``, ``FakeHTTPServer``, ``DEFAULT_API_VERSION``, ``is_loopback_host``,
``require_loopback``, ``parse_headers``, ``json_bytes``, ``merge_headers``.
"""

from __future__ import annotations

import io
import ipaddress
import json
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..core.encoding import decode

DEFAULT_API_VERSION = "2026-10-28.endive"


class Headers(dict[str, str]):
    """Header name -> value, keeping names as sent but looked up case-insensitively."""

    def _find(self, name: object) -> str | None:
        if not isinstance(name, str):
            return None
        if dict.__contains__(self, name):
            return name
        lowered = name.lower()
        return next((key for key in self if key.lower() == lowered), None)

    def __getitem__(self, name: str) -> str:
        key = self._find(name)
        if key is None:
            raise KeyError(name)
        return dict.__getitem__(self, key)

    def __contains__(self, name: object) -> bool:
        return self._find(name) is not None

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        key = self._find(name)
        return default if key is None else dict.__getitem__(self, key)


def parse_headers(items: Iterable[tuple[str, str]]) -> Headers:
    """Headers as received, in order; a repeated header's values are joined, as HTTP allows."""
    headers = Headers()
    for name, value in items:
        seen = headers._find(name)
        headers[seen or name] = f"{headers[seen]}, {value}" if seen else value
    return headers


@dataclass
class RecordedRequest:
    """One API request as the server received it, and the status it answered.

    A request is logged once its outcome is decided (just before the response
    is written or the connection dropped); ``time`` is when it was received (``time.monotonic()``;
    on Linux, when its bytes reached the machine, as the kernel stamped them).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: bytes
    params: dict[str, Any]
    status: int | None
    time: float
    idempotency_key: str | None
    # When the outcome was decided (monotonic), and whether it was a replay
    # of an earlier answer under the same Idempotency-Key.
    finished: float | None = None
    replayed: bool = False
    # The account the request was addressed to, from its key and Stripe-Context
    # (or Stripe-Account) header as it arrived: a platform's or connected
    # account's acct_ id, or None in legacy mode without the header or when
    # the key authenticated no platform. And the first 12 hex digits of the
    # key's SHA-256 ("" without a key), to tell keys apart without logging one.
    account: str | None = None
    key_fingerprint: str = ""

    def summary(self) -> str:
        query = "?" + urlencode(self.query) if self.query else ""
        line = f"{self.method} {self.path}{query} {self.status if self.status is not None else 'dropped'}"
        return f"{line} [{self.account}]" if self.account else line

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, as served by ``GET /_fake/requests`` (``Authorization`` redacted)."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": {name: _redacted(name, value) for name, value in self.headers.items()},
            "body": self.body.decode("utf-8", "replace"),
            "params": self.params,
            "status": self.status,
            "time": self.time,
            "finished": self.finished,
            "idempotency_key": self.idempotency_key,
            "replayed": self.replayed,
            "account": self.account,
            "key_fingerprint": self.key_fingerprint,
        }


def _redacted(name: str, value: str) -> str:
    """A header as the control API shows it: never the API key (``Bearer [redacted]``)."""
    if name.lower() != "authorization":
        return value
    scheme = value.strip().partition(" ")[0]
    return f"{scheme} [redacted]" if scheme.lower() in ("bearer", "basic") else "[redacted]"


@dataclass
class Response:
    """An answer to write: status, body and headers, and how to deliver them.

    ``delivery`` None writes it at once; ``"trickle"`` writes the status line and
    headers at once, then the body a byte every ``interval`` seconds;
    ``"trickle_headers"`` writes everything a byte at a time; ``"endless"`` sends
    a chunked body that never ends (the body, then spaces, until the client
    hangs up or the server stops).
    """

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delivery: str | None = None
    interval: float = 0.0


@dataclass
class Abort:
    """Close the connection without a response: FIN, or RST when ``reset``."""

    reset: bool


def json_bytes(payload: Any) -> bytes:
    """Compact JSON: Stripe indents its answers, but whitespace means nothing to a client, and
    the indenting encoder is Python's own, several times slower than the C one on a list page."""
    return json.dumps(payload, separators=(",", ":")).encode()


def merge_headers(base: dict[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``base`` updated with ``extra``, header names compared case-insensitively."""
    merged = {key: value for key, value in base.items() if key.lower() not in {k.lower() for k in extra}}
    merged.update(extra)
    return merged


@dataclass(frozen=True)
class Backend:
    """All the handler may ask of the fake; ``FakeStripeServer`` builds one for its HTTP server.

    ``handle(request, params_ok)``
        An API request (anything outside ``/_fake/``), parsed; ``params_ok`` is
        False when its params were not UTF-8. Returns a context manager: entering
        it decides the outcome, a ``Response`` to write or an ``Abort`` (close
        without answering), and logs the request, so a client never outruns the
        log; the handler delivers the outcome inside the ``with``. Leaving it
        completes the exchange (releases the Idempotency-Key, calls ``on_request``).
    ``control(method, path, body, headers)``
        A ``/_fake/`` control request; returns the ``Response`` to write.
    """

    handle: Callable[[RecordedRequest, bool], AbstractContextManager[Response | Abort]]
    control: Callable[[str, str, bytes, Headers], Response]


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``: the only hosts a test server should bind."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_loopback(host: str) -> None:
    """Raise ValueError unless ``host`` is a loopback address."""
    if not is_loopback_host(host):
        raise ValueError(
            f"refusing to listen on {host!r}: this test server binds only loopback addresses "
            "(127.0.0.0/8, ::1 or localhost); pass allow_non_loopback=True to bind another"
        )


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], backend: Backend) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.backend = backend
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        # Set when the fake stops: answers being trickled or streamed end at once.
        self.closing = threading.Event()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup that can stall offline.
        socketserver.TCPServer.server_bind(self)
        self.stamped = _enable_stamps(self.socket)  # accepted connections inherit it, stamped from their first byte
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def shutdown_connections(self) -> None:
        """Shut down the connections still open, such as idle keep-alive ones, and end slow answers."""
        self.closing.set()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# Linux stamps each TCP segment as it arrives: a request's time is then when its bytes reached
# the machine, not when a thread of this process got to read them (which, with the GIL and a
# busy machine, can be tens of milliseconds later and would blur a rate measured here).
# Python names the option on few systems; Linux's value is 35 on the usual architectures.
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None)


_TIMESPEC = struct.Struct("@ll")


def _enable_stamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp what ``sock`` receives; False where it cannot (the time a request
    is read then stands in)."""
    if _SO_TIMESTAMPNS is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


class _StampedReader(io.RawIOBase):
    """The connection's reads through ``recvmsg``: ``received`` is when the kernel received the
    bytes read last (on ``time.monotonic()``'s clock). The handler closes the socket, not this."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._space = socket.CMSG_SPACE(_TIMESPEC.size)
        self.received: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size, ancillary, _flags, _address = self._sock.recvmsg_into([buffer], self._space)
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                self.received = time.monotonic() - (time.time() - seconds - nanoseconds / 1e9)
        return size


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the SDKs' connection pools
    server_version = "FakeStripe/1.0"
    timeout = 60  # idle keep-alive connections end eventually
    server: FakeHTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle and delayed ACKs add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)
        self._stamps: _StampedReader | None = None
        if self.server.stamped:
            self.rfile.close()
            self._stamps = _StampedReader(self.connection)
            self.rfile = io.BufferedReader(self._stamps)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the command prints its own line per request."""

    def do_GET(self) -> None:
        # The request line and headers are read: the last read brought (the end of) them.
        received = self._stamps.received if self._stamps is not None and self._stamps.received else time.monotonic()
        body = self._read_body()
        url = urlsplit(self.path)
        backend = self.server.backend
        if url.path.startswith("/_fake/"):
            self._write(backend.control(self.command, url.path, body, parse_headers(self.headers.items())))
            return
        record, params_ok = self._parse(url.path, url.query, body, received)
        with backend.handle(record, params_ok) as outcome:
            if isinstance(outcome, Abort):
                self._abort(reset=outcome.reset)
            elif outcome.delivery is None:
                self._write(outcome)
        if isinstance(outcome, Response) and outcome.delivery is not None:
            # Delivered once the exchange is complete: the request was applied
            # and its Idempotency-Key answers a retry; only the answer is slow.
            self._deliver(outcome)

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _parse(self, path: str, query: str, body: bytes, received: float) -> tuple[RecordedRequest, bool]:
        """The request as recorded, and whether its params decoded (False: not UTF-8)."""
        headers = parse_headers(self.headers.items())
        raw_params = body if self.command == "POST" else query.encode()
        try:
            params, params_ok = _request_params(raw_params), True
        except UnicodeDecodeError:
            params, params_ok = {}, False
        record = RecordedRequest(
            method=self.command,
            path=path,
            query=dict(parse_qsl(query, keep_blank_values=True)),
            headers=headers,
            body=body,
            params=params,
            status=None,
            time=received,
            idempotency_key=headers.get("Idempotency-Key"),
        )
        return record, params_ok

    def _write(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if _declares_length(response.headers):
                # The answer's own framing (a hostile one): the body ends where the connection does.
                self.send_header("Connection", "close")
            else:
                self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
        except OSError:  # the client gave up (e.g. its timeout fired during a delay)
            self.close_connection = True

    def _deliver(self, response: Response) -> None:
        """Write ``response`` a byte at a time, or with a body that never ends (see ``Response``)."""
        self.close_connection = True
        endless = response.delivery == "endless"
        head = self._head(response, chunked=endless)
        try:
            if endless:
                self.wfile.write(head + (_chunk(response.body) if response.body else b""))
                filler = _chunk(b" " * 65536)
                while not self.server.closing.is_set():
                    self.wfile.write(filler)  # until the client hangs up, or stop()
                return
            data = head + response.body
            start = 0 if response.delivery == "trickle_headers" else len(head)
            self.wfile.write(data[:start])
            for i in range(start, len(data)):
                if i > start and self.server.closing.wait(response.interval):
                    return
                self.wfile.write(data[i : i + 1])
        except OSError:
            pass  # the client gave up (its deadline passed)

    def _head(self, response: Response, *, chunked: bool) -> bytes:
        """The status line and headers ``_write`` would send, as bytes."""
        reason = self.responses.get(response.status, ("",))[0]
        lines = [
            f"{self.protocol_version} {response.status} {reason}",
            f"Server: {self.version_string()}",
            f"Date: {self.date_time_string()}",
            *(f"{k}: {v}" for k, v in response.headers.items()),
        ]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        elif not _declares_length(response.headers):
            lines.append(f"Content-Length: {len(response.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _abort(self, *, reset: bool) -> None:
        """Close the connection without a response: FIN, or RST when ``reset``."""
        self.close_connection = True
        if reset:
            # Linger 0 makes close() send RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


def _declares_length(headers: Mapping[str, str]) -> bool:
    """Whether ``headers`` (a fault's) set the answer's Content-Length themselves."""
    return any(name.lower() == "content-length" for name in headers)


def _chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _request_params(raw: bytes | str) -> dict[str, Any]:
    """Decode a form body or query with wire.decode, also accepting ``key[]=`` list items."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    if "[]" not in text and "%5b%5d" not in text.lower():
        return decode(text)
    # wire.decode only knows indexed lists (what stripe-python sends); number the "[]" items.
    counters: dict[str, int] = {}
    pairs = []
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key.endswith("[]"):
            base = key[:-2]
            counters[base] = counters.get(base, -1) + 1
            key = f"{base}[{counters[base]}]"
        pairs.append((key, value))
    return decode(urlencode(pairs))
