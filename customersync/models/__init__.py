"""The local mirror of Stripe customers (``customer``) and the sync's own records (``records``)."""

from .account import Account
from .customer import SYNC_OWNED_FIELDS, Customer, CustomerQuerySet, SyncStatus, TaxExempt
from .records import (
    AttemptOutcome,
    Conflict,
    Drift,
    EventCursor,
    EventOutcome,
    PendingPush,
    PendingPushQuerySet,
    PullCursor,
    PushAttempt,
    PushLease,
    PushState,
    Resolution,
    WebhookEvent,
)

__all__ = [
    "Account",
    "SYNC_OWNED_FIELDS",
    "AttemptOutcome",
    "Conflict",
    "Customer",
    "Drift",
    "EventCursor",
    "CustomerQuerySet",
    "EventOutcome",
    "PendingPush",
    "PendingPushQuerySet",
    "PullCursor",
    "PushAttempt",
    "PushLease",
    "PushState",
    "Resolution",
    "SyncStatus",
    "TaxExempt",
    "WebhookEvent",
]
