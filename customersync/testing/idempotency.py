"""``Idempotency-Key`` on POST, honoured as Stripe does.

A second request while one with the same key is in flight gets a 409; a key
reused for a different request gets a 400; otherwise the first answer is
replayed, marked ``Idempotent-Replayed: true``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .customer import _random_id
from .errors import FakeStripeAPIError
from .messages import RecordedRequest, _error_response, _Response


@dataclass
class _CachedResult:
    """What an Idempotency-Key was first used for, and the answer to replay."""

    method: str
    path: str
    body: bytes
    status: int
    payload: bytes
    request_id: str


class _IdempotencyKeys:
    """The keys in flight and the first answer given under each key. Not thread-safe: the server locks."""

    def __init__(self) -> None:
        self.in_flight: set[str] = set()
        self.results: dict[str, _CachedResult] = {}

    def begin(self, key: str) -> bool:
        """Mark ``key`` in flight; False if it already is."""
        if key in self.in_flight:
            return False
        self.in_flight.add(key)
        return True

    def end(self, key: str) -> None:
        self.in_flight.discard(key)

    def answer(self, record: RecordedRequest, key: str, execute: Callable[[], _Response]) -> _Response:
        """The answer first given under ``key``, replayed; or ``execute()``'s, saved for replay."""
        cached = self.results.get(key)
        if cached is not None:
            if (cached.method, cached.path, cached.body) != (record.method, record.path, record.body):
                error = FakeStripeAPIError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with. Try using a key other than "
                    f"'{key}' if you meant to execute a different request.",
                    type="idempotency_error",
                )
                return _error_response(error, {"Idempotency-Key": key})
            record.replayed = True
            return _Response(
                cached.status,
                cached.payload,
                {"Idempotency-Key": key, "Idempotent-Replayed": "true", "Original-Request": cached.request_id},
            )
        response = execute()
        response.headers["Idempotency-Key"] = key
        # Like Stripe, save only requests that started executing: not 400 validation errors.
        if 200 <= response.status < 300 or response.status == 404:
            request_id = _random_id("req_")
            response.headers["Request-Id"] = request_id
            self.results[key] = _CachedResult(
                record.method, record.path, record.body, response.status, response.body, request_id
            )
        return response


def _in_progress(key: str) -> _Response:
    # Like Stripe: a second request while one with the same key is in flight.
    error = FakeStripeAPIError(
        409,
        "There is currently another in-progress request using this Stripe API key and "
        "idempotency key. Please try again later.",
        type="idempotency_error",
    )
    return _error_response(error, {"Idempotency-Key": key})
