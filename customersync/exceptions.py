"""The app's exceptions: one small tree under ``CustomerSyncError``.

``StripeError`` and its subclasses carry what Stripe said (HTTP status, error
type, code, param, message, ``Request-Id``) and never the API key. A
configuration error is also Django's ``ImproperlyConfigured``, and a bad
webhook signature Django's ``SuspiciousOperation``, so code that catches
Django's kinds catches ours. Nothing else from Django is imported.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation

from .core.redaction import scrub

__all__ = [
    "CustomerSyncError",
    "ConfigurationError",
    "SignatureError",
    "EventError",
    "Busy",
    "RetryLater",
    "Paused",
    "ParamError",
    "Unstorable",
    "StripeError",
    "APIConnectionError",
    "InvalidRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "IdempotencyError",
    "RateLimitError",
    "APIError",
    "AttemptError",
]


class CustomerSyncError(Exception):
    """Base class of every error this app raises."""


class ConfigurationError(CustomerSyncError, ImproperlyConfigured):
    """A setting is missing or wrong; the message names it and what to set."""


class SignatureError(CustomerSyncError, SuspiciousOperation):
    """The Stripe-Signature header does not prove the payload came from Stripe."""


class EventError(CustomerSyncError, ValueError):
    """A (signed) webhook payload that is not a Stripe event the mirror can use; the message says why."""


class Busy(CustomerSyncError):
    """Another worker holds this customer's lease; try again shortly."""


class LeaseLost(Busy):
    """This worker's lease on a customer expired or was taken over: it sends and writes nothing more."""


class ParamError(CustomerSyncError, ValueError):
    """A desired value that the update endpoint cannot express (names the param)."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        self.message = message
        super().__init__(f"{param}: {message}")


class Unstorable(CustomerSyncError, ValueError):
    """A customer from Stripe holds a value the mirror's columns cannot (a name past the
    column's length, a NUL character): it was skipped, nothing written. ``errors`` names each field."""

    def __init__(self, stripe_id: str, errors: dict[str, list[str]]) -> None:
        self.stripe_id = stripe_id
        self.errors = errors
        self.message = "not stored, a value does not fit here: " + "; ".join(
            f"{name}: {' '.join(messages)}" for name, messages in errors.items()
        )
        super().__init__(f"{stripe_id}: {self.message}")


# The columns that keep Stripe's error fields (PushAttempt): longer values are cut, marked with "…".
FIELD_MAX, PARAM_MAX, MESSAGE_MAX = 64, 255, 5000


def _cut(value: object, limit: int, secrets: Iterable[str] = ()) -> str | None:
    """``value`` as text every column can hold, cut to ``limit``, with ``secrets`` and anything
    shaped like a Stripe secret redacted (a hostile server's 401 may echo the key it was sent)."""
    if value is None:
        return None
    text = scrub(value if isinstance(value, str) else str(value), secrets)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class StripeError(CustomerSyncError):
    """Stripe answered, or could not be reached. Never carries the API key, nor anything shaped
    like a Stripe secret (``core.redaction``): what it holds may be logged, shown and stored."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        # What Stripe (or something pretending to be it) sent is cut to what the
        # sync log and the customer store: an oversized field is never a DataError.
        self.message = _cut(message, MESSAGE_MAX) or ""
        self.http_status = http_status if isinstance(http_status, int) and 0 <= http_status < 1000 else None
        self.type = _cut(type, FIELD_MAX)
        self.code = _cut(code, FIELD_MAX)
        self.param = _cut(param, PARAM_MAX)
        self.request_id = _cut(request_id, PARAM_MAX)
        # Stripe-Should-Retry, when the response carried it.
        self.should_retry = should_retry
        super().__init__(self.message)

    def __str__(self) -> str:
        parts = [self.message]
        details = [
            f"{label}={value}"
            for label, value in (
                ("status", self.http_status),
                ("type", self.type),
                ("code", self.code),
                ("param", self.param),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        if details:
            parts.append(f"({', '.join(details)})")
        return " ".join(parts)

    def redact(self, secrets: Iterable[str]) -> StripeError:
        """This error with each of ``secrets`` (the keys and webhook secrets configured) taken out of
        every field, in place, before it is stored; returns it."""
        secrets = tuple(secrets)
        self.message = _cut(self.message, MESSAGE_MAX, secrets) or ""
        self.type = _cut(self.type, FIELD_MAX, secrets)
        self.code = _cut(self.code, FIELD_MAX, secrets)
        self.param = _cut(self.param, PARAM_MAX, secrets)
        self.request_id = _cut(self.request_id, PARAM_MAX, secrets)
        self.args = (self.message,)
        return self

    def as_dict(self) -> dict[str, Any]:
        """What is stored on the customer and shown in the admin."""
        return {
            "message": self.message,
            "http_status": self.http_status,
            "type": self.type,
            "code": self.code,
            "param": self.param,
            "request_id": self.request_id,
        }


class APIConnectionError(StripeError):
    """The request may or may not have reached Stripe (DNS, refused, reset, timeout)."""


class InvalidRequestError(StripeError):
    """400 or 404: the request is wrong, or the object does not exist."""


class AuthenticationError(StripeError):
    """401: the API key is missing, wrong or revoked."""


class PermissionDeniedError(StripeError):
    """403: the key may not do this."""


class IdempotencyError(StripeError):
    """The idempotency key was reused with other parameters, or is in use (409)."""


class RateLimitError(StripeError):
    """429: too many requests, or ``lock_timeout`` on a busy object."""


class APIError(StripeError):
    """5xx, or a response that is not Stripe's JSON."""


class AttemptError(StripeError):
    """Something other than a Stripe error ended a push: an exception of any kind raised between
    its take and its confirm (a value in Stripe's answer that cannot be read, a setting that cannot
    make a client, the rate budget's store away), kept as its type (``type``) and its message,
    redacted. ``should_retry`` says whether it can succeed later."""


def is_retryable(err: StripeError) -> bool:
    """Stripe's rules: obey Stripe-Should-Retry, else retry network, 409, 429 and 5xx; and 401,
    a key retired by a rotation while the push waited (workers restarted with the new key send
    it again under the same idempotency key)."""
    if err.should_retry is not None:
        return err.should_retry
    if isinstance(err, (APIConnectionError, RateLimitError, AuthenticationError)):
        return True
    if isinstance(err, IdempotencyError) and err.http_status == 409:
        return True
    # 5xx, and a 2xx whose body was cut off: resending under the same key
    # replays Stripe's answer, so it is safe.
    status = err.http_status
    return isinstance(err, APIError) and (status is None or status >= 500 or status < 300)


class RetryLater(CustomerSyncError):
    """A retryable error; the frozen record will be resent under the same key."""

    def __init__(self, error: StripeError, attempts: int) -> None:
        self.error = error
        self.attempts = attempts
        super().__init__(str(error))


class Paused(RetryLater):
    """The account's rate budget is paused after Stripe answered 429: nothing was sent. Try again in
    ``seconds``: a worker hands the push back with that countdown instead of sleeping through it."""

    def __init__(self, seconds: float, budget: str = "") -> None:
        self.seconds = max(float(seconds), 0.0)
        self.budget = budget
        where = f" (rate budget {budget})" if budget else ""
        error = RateLimitError(
            f"The account's requests{where} are paused {self.seconds:.1f} s more after Stripe answered 429: "
            "nothing was sent.",
            code="rate_limit_pause",
            should_retry=True,
        )
        super().__init__(error, 0)


class CreateFailed(CustomerSyncError):
    """Stripe refused to create an owner's customer; ``error`` holds its message, code and param."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error
        super().__init__(error.get("message") or "Stripe refused to create the customer.")
