"""The ``/_fake/`` control API: lets another process drive the fake over HTTP.

JSON in, JSON out, no auth, not logged. Each route calls one public method of
``FakeStripeServer``, so the control API can do nothing the Python API cannot.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .messages import _json_bytes, _Response

if TYPE_CHECKING:
    from .server import FakeStripeServer


def _control(fake: FakeStripeServer, method: str, path: str, body: bytes) -> _Response:
    """Answer a control request to ``fake``."""
    status, payload = _dispatch(fake, method, path, body)
    return _Response(status, _json_bytes(payload), {"Content-Type": "application/json"})


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
            return 200, fake.seed(**_json_object(data))
        if route == ("GET", "/_fake/requests"):
            return 200, [record.to_dict() for record in fake.requests]
        if route == ("DELETE", "/_fake/requests"):
            fake.clear_requests()
            return 200, {"ok": True}
        if route == ("POST", "/_fake/faults"):
            fake.inject(**_json_object(data))
            return 200, {"ok": True}
        sources = re.fullmatch(r"/_fake/customers/([^/]+)/sources", route[1])
        if method == "POST" and sources:
            return 200, fake.attach_source(unquote(sources.group(1)), **_json_object(data))
    except KeyError as exc:
        return 404, {"error": {"type": "invalid_request_error", "message": f"Not found: {exc}"}}
    except (TypeError, ValueError) as exc:
        return 400, {"error": {"type": "invalid_request_error", "message": str(exc)}}
    return 404, {"error": {"type": "invalid_request_error", "message": f"Unknown control route {method} {path}"}}


def _json_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data
