"""The Stripe webhook endpoint for customer events.

Add it to your URLconf in one line::

    path("stripe/", include("customersync.urls")),   # -> /stripe/webhook/

and set ``CUSTOMERSYNC["WEBHOOK_SECRET"]`` to the endpoint's signing secret.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import time

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.views.debug import get_default_exception_reporter_filter
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from . import sync
from .conf import app_settings
from .eventcheck import parse_payload
from .exceptions import ConfigurationError, EventError, SignatureError

# Stripe's header is ``t=<seconds>,v1=<hex>[,v1=<hex>...][,v0=...]``: a few hundred characters.
MAX_HEADER = 4096
# ASCII digits only (``str.isdigit`` takes "²" and every script's digits); 12 reach the year 33658.
TIMESTAMP = re.compile(r"[0-9]{1,12}")
SIGNATURE = re.compile(r"[0-9a-f]{64}")  # a SHA-256 HMAC, lowercase hex


@sensitive_variables()
def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The ``v1`` signature Stripe computes: HMAC-SHA256 of ``"{t}.{payload}"`` with the secret."""
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


@sensitive_variables()
def verify(payload: bytes, header: str, secret: str, *, tolerance: float = 300, now: float | None = None) -> None:
    """Raise ``SignatureError`` unless one ``v1`` signature of ``header`` matches and is recent."""
    timestamp, signatures = _parse_header(header or "")
    expected = sign(payload, secret, timestamp)
    # compare_digest against each: constant time, whichever of several secrets signed it.
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise SignatureError("No signature matches the payload.")
    if timestamp < (time.time() if now is None else now) - tolerance:
        raise SignatureError("The signature's timestamp is outside the tolerance.")


def _parse_header(header: str) -> tuple[int, list[str]]:
    """The timestamp and the ``v1`` signatures of a Stripe-Signature header (other schemes are skipped)."""
    if len(header) > MAX_HEADER:
        raise SignatureError(f"Bad signature header: longer than {MAX_HEADER} characters.")
    timestamps, signatures = [], []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            if not TIMESTAMP.fullmatch(value):
                raise SignatureError("Bad signature header: t must be 1 to 12 ASCII digits.")
            timestamps.append(int(value))
        elif name == "v1":
            if not SIGNATURE.fullmatch(value):
                raise SignatureError("Bad signature header: each v1 must be 64 lowercase hexadecimal digits.")
            signatures.append(value)
    if len(timestamps) > 1:
        raise SignatureError("Bad signature header: more than one t.")
    if not timestamps or not signatures:
        raise SignatureError("No timestamp or no v1 signature in the Stripe-Signature header.")
    return timestamps[0], signatures


@functools.cache
def _always_active(base: type) -> type:
    """The site's exception reporter filter class, made to apply with DEBUG on too.

    Django skips ``sensitive_variables`` while DEBUG is on, so its debug page
    would show the webhook secret and the signature; this view's never does.
    """
    return type(f"AlwaysActive{base.__name__}", (base,), {"is_active": lambda self, request: True})


@csrf_exempt
@require_POST
@sensitive_post_parameters()
@sensitive_variables("secret", "header")
def webhook(request: HttpRequest) -> HttpResponse:
    """Verify a Stripe event and apply customer events to the mirror.

    400, with what is wrong, for a bad signature or a signed payload that is
    not a usable Stripe event; nothing is written then.
    """
    reporter_filter = _always_active(type(get_default_exception_reporter_filter()))()
    request.exception_reporter_filter = reporter_filter  # type: ignore[attr-defined]
    secret = app_settings.get("WEBHOOK_SECRET")
    if not secret:
        raise ConfigurationError("Set CUSTOMERSYNC['WEBHOOK_SECRET'] to the webhook endpoint's signing secret.")
    header = request.headers.get("Stripe-Signature", "")
    try:
        verify(request.body, header, secret, tolerance=app_settings.WEBHOOK_TOLERANCE)
        outcome = sync.handle_event(parse_payload(request.body))
    except (SignatureError, EventError) as err:
        return HttpResponseBadRequest(str(err))
    return JsonResponse({"outcome": outcome})
