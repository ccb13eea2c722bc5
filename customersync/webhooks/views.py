"""The Stripe webhook endpoints for customer events.

Add them to your URLconf in one line::

    path("stripe/", include("customersync.urls")),

which serves, each with its own signing secret:

- ``stripe/webhook/``: the default platform's account endpoint (``CUSTOMERSYNC["WEBHOOK_SECRET"]``);
- ``stripe/webhook/connect/``: its Connect endpoint, events of connected accounts
  (``CONNECT_WEBHOOK_SECRET``), routed by the event's ``account``;
- ``stripe/webhook/<platform>/`` and ``stripe/webhook/<platform>/connect/``: the same for
  each of ``CUSTOMERSYNC["PLATFORMS"]``.

A secret may be a list while Stripe rolls it: a signature by any of them is accepted.
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
import time
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.views.debug import get_default_exception_reporter_filter
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST

from .. import sync
from ..accounts import DEFAULT, Platform, platforms
from ..conf import app_settings
from ..exceptions import EventError, SignatureError
from ..health.counters import count_bad_signature
from ..models import EventOutcome
from ..stripe.client import ACCOUNT_ID
from .events import record_event
from .signature import sign
from .validation import check_event, parse_payload

# Stripe's header is ``t=<seconds>,v1=<hex>[,v1=<hex>...][,v0=...]``: a few hundred characters.
MAX_HEADER = 4096
# ASCII digits only (``str.isdigit`` takes "²" and every script's digits); 12 reach the year 33658.
TIMESTAMP = re.compile(r"[0-9]{1,12}")
SIGNATURE = re.compile(r"[0-9a-f]{64}")  # a SHA-256 HMAC, lowercase hex

logger = logging.getLogger("customersync")


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


@sensitive_variables()
def verify_any(payload: bytes, header: str, secrets: tuple[str, ...], *, tolerance: float = 300) -> None:
    """``verify`` against each secret of an endpoint (several while Stripe rolls the secret)."""
    error: SignatureError | None = None
    for secret in secrets:
        try:
            verify(payload, header, secret, tolerance=tolerance)
            return
        except SignatureError as err:
            error = err
    raise error or SignatureError("No signing secret is set for this endpoint.")


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
@sensitive_variables("secrets", "header", "found")
def webhook(request: HttpRequest, platform: str = DEFAULT, connect: bool = False) -> HttpResponse:
    """Verify a Stripe event and apply customer events to the mirror of the endpoint's account.

    400, with what is wrong, for a bad signature or a signed payload that is
    not a usable Stripe event: nothing is written then (a bad signature is counted in Redis, for
    the status figures). A usable event of another mode or
    endpoint is a 400 too, recorded as refused; one of a connected account not mirrored is
    answered 200 and recorded as ignored.
    """
    reporter_filter = _always_active(type(get_default_exception_reporter_filter()))()
    request.exception_reporter_filter = reporter_filter  # type: ignore[attr-defined]
    found = platforms().get(platform)
    if found is None:
        raise Http404("No such platform.")
    name = "CONNECT_WEBHOOK_SECRET" if connect else "WEBHOOK_SECRET"
    secrets = found.connect_webhook_secrets if connect else found.webhook_secrets
    if not secrets:
        # Nothing can prove who sent this: refused like a bad signature (a request is never a 500),
        # and the operator is told which setting to fill.
        logger.error("A webhook reached an endpoint without a signing secret: set %s.", found.setting(name))
        count_bad_signature(found.name)
        return HttpResponseBadRequest("No signing secret is set for this endpoint.")
    header = request.headers.get("Stripe-Signature", "")
    try:
        verify_any(request.body, header, secrets, tolerance=app_settings.WEBHOOK_TOLERANCE)
    except SignatureError as err:
        # Nothing of an unverified body is trusted, not even its event id: no row, a count in Redis.
        count_bad_signature(found.name)
        return HttpResponseBadRequest(str(err))
    try:
        event = parse_payload(request.body)
        check_event(event)  # the shape first: the account and the mode are read from it
        try:
            account = _account(event, found, connect)
        except EventError as err:  # signed, well formed, not this endpoint's: refused, and recorded
            record_event(event, platform=found.name, outcome=EventOutcome.REFUSED, detail=str(err))
            raise
        if account is _NOT_MIRRORED:
            record_event(event, platform=found.name, outcome=EventOutcome.IGNORED, detail="account not mirrored")
            return JsonResponse({"outcome": "ignored: account not mirrored"})
        outcome = sync.handle_event(event, account=account, platform=found.name)
    except (SignatureError, EventError) as err:
        return HttpResponseBadRequest(str(err))
    return JsonResponse({"outcome": outcome})


_NOT_MIRRORED: Any = object()


def _account(event: dict[str, Any], found: Platform, connect: bool) -> Any:
    """The account a verified event belongs to: None (the default platform's own), an ``Account``,
    or ``_NOT_MIRRORED``. Raises ``EventError`` for an event this endpoint must not take."""
    livemode = event.get("livemode")
    if isinstance(livemode, bool) and found.livemode is not None and livemode != found.livemode:
        mode, key = ("live", "test") if livemode else ("test", "live")
        raise EventError(f"livemode: a {mode}-mode event at an endpoint whose platform key is in {key} mode.")
    connected = event.get("account")
    if connect:
        if not isinstance(connected, str) or not ACCOUNT_ID.fullmatch(connected):
            raise EventError("account: a Connect endpoint's event names its connected account (acct_...).")
    elif connected is not None:
        raise EventError(
            "account: an event of a connected account reached the account endpoint; "
            "send Connect events to the Connect endpoint (webhook/connect/)."
        )
    from ..models import Account

    if found.name == DEFAULT and not connect:
        return None
    account = Account.objects.filter(platform=found.name, stripe_account=connected or "").first()
    return _NOT_MIRRORED if account is None else account
