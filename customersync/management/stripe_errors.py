"""What the commands say when Stripe could not be reached or refused a request.

Each message names the API host (``CUSTOMERSYNC['API_BASE']``) and, when
Stripe answered, its HTTP status, request id and message; a next step is
suggested only when one applies (``next_step``): a refused connection points
at the setting and the network, a 401 at the key, a 404 of one customer at
its id and mode. ``--resume`` is the pull command's to offer, and only after
it wrote something to resume from.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from typing import Any

import requests

from customersync.conf import app_settings
from customersync.exceptions import APIConnectionError, StripeError
from customersync.stripe.client import DEFAULT_API_BASE

# The first of these found in the exception's chain says why the connection failed.
_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (ConnectionRefusedError, "connection refused"),
    (socket.gaierror, "host name not found"),
    (ssl.SSLError, "TLS handshake failed"),
    (ConnectionResetError, "connection reset"),
    (requests.Timeout, "no answer in time"),
    (TimeoutError, "no answer in time"),
)


def api_base() -> str:
    """Where the commands talk to Stripe: ``CUSTOMERSYNC['API_BASE']``."""
    return str(app_settings.get("API_BASE") or DEFAULT_API_BASE).rstrip("/")


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and every exception behind it (causes, contexts, urllib3's ``reason``, exceptions in ``args``)."""
    found: list[BaseException] = []
    todo: list[BaseException] = [err]
    while todo:
        current = todo.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        behind = (current.__cause__, current.__context__, getattr(current, "reason", None), *current.args)
        todo.extend(item for item in behind if isinstance(item, BaseException))
    return found


def reason(err: BaseException) -> str:
    """Why a connection failed, in words: ``connection refused``, ``host name not found``..."""
    chain = _chain(err)
    for kind, words in _REASONS:
        if any(isinstance(item, kind) for item in chain):
            return words
    network = [item for item in chain if isinstance(item, requests.RequestException)]
    return type(network[0]).__name__ if network else "network error"


def _timed_out(err: BaseException) -> bool:
    return reason(err) == "no answer in time"


def _unanswered(error: Mapping[str, Any]) -> bool:
    """A stored error of a request Stripe never answered (no status, and not one of this app's own checks)."""
    return not error.get("http_status") and not error.get("type")


def describe(err: StripeError | Mapping[str, Any]) -> str:
    """One clause, without a final period: what happened, at which host.

    ``err``: the exception, or an error as stored on a customer (``StripeError.as_dict()``).
    """
    base = api_base()
    if isinstance(err, APIConnectionError):
        if _timed_out(err):
            seconds = app_settings.get("TIMEOUT")
            return f"Stripe at {base} did not answer within {seconds:g} s (CUSTOMERSYNC['TIMEOUT'])"
        return f"could not reach Stripe at {base} ({reason(err)})"
    error = err.as_dict() if isinstance(err, StripeError) else err
    message = str(error.get("message") or "").strip().rstrip(".")
    param = f" (param {error['param']})" if error.get("param") else ""
    status = error.get("http_status")
    if not status and _unanswered(error):
        return f"{message} (API base {base})"
    if not status:
        return f"{message}{param}"
    details = [str(error["code"])] if error.get("code") else []
    if error.get("request_id"):
        details.append(f"request {error['request_id']}")
    said = f" ({', '.join(details)})" if details else ""
    return f"Stripe at {base} answered HTTP {status}{said}: {message}{param}"


def next_step(err: StripeError | Mapping[str, Any], *, one_customer: bool = False, rate: str = "PULL_RATE") -> str:
    """What to do about it, as a sentence; ``""`` when nothing but fixing the request helps (a 400).

    ``one_customer``: the request was about one customer (a 404 then means its id);
    ``rate``: the setting that paces the command's requests.
    """
    if isinstance(err, APIConnectionError):
        if _timed_out(err):
            return "Check the network, or give Stripe longer with CUSTOMERSYNC['TIMEOUT']."
        return f"Check CUSTOMERSYNC['API_BASE'] and that this machine can reach {api_base()}."
    status = err.http_status if isinstance(err, StripeError) else err.get("http_status")
    if not isinstance(err, StripeError) and not status and _unanswered(err):
        return f"Check CUSTOMERSYNC['API_BASE'] and that this machine can reach {api_base()}."
    if status == 401:
        return "Check CUSTOMERSYNC['API_KEY']: Stripe does not accept it (missing, mistyped or revoked)."
    if status == 403:
        return (
            "Give the key access to Customers in Stripe's dashboard (a restricted key needs write access to push, "
            "read access to pull), or use another key."
        )
    if status == 404 and one_customer:
        return "Check the id, and that the customer is in this key's account and mode (a test key sees test data only)."
    if status == 404:
        return f"Check CUSTOMERSYNC['API_BASE']: {api_base()} does not answer as Stripe's API does."
    if status == 429:
        return f"Wait a minute and run it again, or lower CUSTOMERSYNC['{rate}']."
    if status is not None and status >= 500:
        return "Stripe could not answer: run it again in a few minutes (https://status.stripe.com)."
    return ""


def sentence(*parts: str) -> str:
    """Clauses and sentences joined, each clause ending with one period."""
    out = []
    for part in parts:
        part = part.strip()
        if part:
            out.append(part if part.endswith((".", "!", "?")) else f"{part}.")
    return " ".join(out)
