"""Injected faults: error statuses, garbage bodies, delays, dropped or reset connections,
answers trickled a byte at a time or never ending.

``FakeStripeServer.inject`` queues them; each API request takes the first
matching fault (by method, path prefix and, when the fault names one, the
account the request acts on), first-in first-out, until its ``times`` are
used up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .handler import Response, json_bytes, merge_headers

# Apply the request, then deliver its answer slowly ("trickle": the body;
# "trickle_headers": status line and headers too) or endlessly.
_DELIVERIES = ("trickle", "trickle_headers", "endless")


_FAULT_ACTIONS = (None, "drop", "drop_after", "reset", *_DELIVERIES)


def _default_fault_error(status: int) -> dict[str, Any]:
    if status == 429:
        return {
            "type": "invalid_request_error",
            "code": "rate_limit",
            "message": "Too many requests hit the API too quickly. (injected fault)",
        }
    if status >= 500:
        return {"type": "api_error", "message": "An unknown error occurred. (injected fault)"}
    return {"type": "invalid_request_error", "message": f"Injected fault ({status})."}


@dataclass
class Fault:
    status: int | None
    body: bytes | None
    headers: dict[str, str]
    error: dict[str, Any] | None
    delay: float
    action: str | None
    remaining: int
    method: str | None
    path_prefix: str
    trickle: float = 1.0  # seconds between bytes of a trickled answer
    account: str | None = None  # only requests acting on this account (None: any)

    def matches(self, method: str, path: str, account: str | None) -> bool:
        return (
            (self.method is None or self.method == method)
            and path.startswith(self.path_prefix)
            and (self.account is None or self.account == account)
        )

    def response(self) -> Response:
        assert self.status is not None
        body = self.body
        if body is None:
            body = json_bytes({"error": self.error or _default_fault_error(self.status)})
        return Response(self.status, body)

    def shape(self, response: Response) -> Response:
        """The executed request's ``response`` as this fault delivers it: its headers added, slowly or endlessly."""
        response.headers = merge_headers(response.headers, self.headers)
        if self.action in _DELIVERIES:
            response.delivery, response.interval = self.action, self.trickle
        return response


def make_fault(
    *,
    status: int | None,
    body: str | bytes | None,
    headers: Mapping[str, str] | None,
    error: Mapping[str, Any] | None,
    delay: float,
    action: str | None,
    times: int,
    method: str | None,
    path_prefix: str,
    trickle: float | None = None,
    account: str | None = None,
) -> Fault:
    """A fault from ``FakeStripeServer.inject``'s arguments, checked (ValueError if inconsistent)."""
    if action not in _FAULT_ACTIONS:
        raise ValueError(f"action must be one of {_FAULT_ACTIONS}, not {action!r}")
    if status is not None and action is not None:
        raise ValueError("give either status or action, not both")
    if status is None and (body is not None or error is not None):
        raise ValueError("body and error need a status")
    if status is not None and not 100 <= int(status) <= 599:
        raise ValueError(f"status must be an HTTP status code, not {status!r}")
    if int(times) < 1 or float(delay) < 0:
        raise ValueError("times must be at least 1 and delay not negative")
    if trickle is not None and action not in ("trickle", "trickle_headers"):
        raise ValueError("trickle (seconds between bytes) needs action='trickle' or action='trickle_headers'")
    if trickle is not None and float(trickle) < 0:
        raise ValueError("trickle must not be negative")
    if account is not None and (not isinstance(account, str) or not account.startswith("acct_")):
        raise ValueError(f"account must be an acct_ id, not {account!r}")
    for name, value in (headers or {}).items():
        try:
            f"{name}: {value}".encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"header {name!r} must be latin-1 text, as HTTP carries it") from None
    if isinstance(body, str):
        body = body.encode()
    return Fault(
        status=None if status is None else int(status),
        body=body,
        headers={str(k): str(v) for k, v in (headers or {}).items()},
        error=dict(error) if error is not None else None,
        delay=float(delay),
        action=action,
        remaining=int(times),
        method=method.upper() if method else None,
        path_prefix=path_prefix,
        trickle=1.0 if trickle is None else float(trickle),
        account=account,
    )


class FaultQueue:
    """Pending faults in the order injected. Not thread-safe: the server locks."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear(self) -> None:
        self.faults.clear()

    def take(self, method: str, path: str, account: str | None) -> Fault | None:
        """The first fault matching the request; it leaves the queue once its ``times`` are used up."""
        for fault in self.faults:
            if fault.matches(method, path, account):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.faults.remove(fault)
                return fault
        return None
