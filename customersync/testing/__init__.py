"""Test helpers shipped with customersync: a fake Stripe customers API (stdlib only).

Run it as a command with ``python -m customersync.testing``.
"""

from .server import (
    DEFAULT_API_VERSION,
    FakeStripeServer,
    Headers,
    RecordedRequest,
    StripeError,
    is_loopback_host,
)

__all__ = [
    "DEFAULT_API_VERSION",
    "FakeStripeServer",
    "Headers",
    "RecordedRequest",
    "StripeError",
    "is_loopback_host",
]
