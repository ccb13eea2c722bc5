"""Requests and responses as data: what the handler parses and writes, what the fake records.

Every API request is recorded byte for byte (headers as sent, the raw body) in
a ``RecordedRequest``, with the params it decoded to and the status answered.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from .customer import _random_id
from .errors import FakeStripeAPIError

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


def _parse_headers(items: Iterable[tuple[str, str]]) -> Headers:
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
class _Response:
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
class _Abort:
    """Close the connection without a response: FIN, or RST when ``reset``."""

    reset: bool


def _json_bytes(payload: Any) -> bytes:
    """Compact JSON: Stripe indents its answers, but whitespace means nothing to a client, and
    the indenting encoder is Python's own, several times slower than the C one on a list page."""
    return json.dumps(payload, separators=(",", ":")).encode()


def _error_response(error: FakeStripeAPIError, headers: Mapping[str, str] | None = None) -> _Response:
    return _Response(error.status, _json_bytes(error.body()), dict(headers or {}))


def _merge_headers(base: dict[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``base`` updated with ``extra``, header names compared case-insensitively."""
    merged = {key: value for key, value in base.items() if key.lower() not in {k.lower() for k in extra}}
    merged.update(extra)
    return merged


def _with_api_headers(record: RecordedRequest, response: _Response) -> _Response:
    """``response`` with the headers every API answer carries (its own take precedence)."""
    version = record.headers.get("Stripe-Version") or DEFAULT_API_VERSION
    headers = _merge_headers(
        {
            "Content-Type": "application/json",
            "Request-Id": _random_id("req_"),
            "Stripe-Version": version,
        },
        response.headers,
    )
    return replace(response, headers=headers)


def _bearer_key(headers: Headers) -> str | None:
    """The API key from ``Authorization`` (Bearer, or Basic with the key as user name)."""
    scheme, _, credential = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return credential.strip() or None
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credential.strip(), validate=True).decode().partition(":")[0] or None
        except (ValueError, UnicodeDecodeError):
            return None
    return None
