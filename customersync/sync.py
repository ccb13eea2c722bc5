"""The app's public operations, in one place: what tasks, commands, the admin and sites call.

Each lives in the module of its job (the layout in docs/architecture.md):

- ``push.outbox``: record a change, publish its task, mark many for pushing, drain, sweep;
- ``push.send``: send a customer's pending changes and record what Stripe said, one request
  per customer in flight (``push.lease``);
- ``pull.pages``: import or refresh the mirror from Stripe;
- ``pull.catchup``: catch up on Stripe's events log after an outage, and reconcile an account;
- ``webhooks.events``: apply Stripe's webhook events;
- ``owner.customers`` and ``owner.related``: customers owned by the site's model
  (``CUSTOMERSYNC['OWNER_MODEL']``);
- ``health.status``: the sync's figures per account, for monitors and the admin's overview.
"""

from __future__ import annotations

from .exceptions import Busy, Paused, RetryLater
from .health.status import status
from .owner.customers import OwnerSyncResult, check_owner, for_owner, get_or_create_for, sync_from_owners, unsent
from .owner.related import check_related
from .pull.catchup import CatchUpStats, ReconcileStats, catch_up, reconcile
from .pull.pages import PullStats, pull, pull_one
from .push.outbox import drain, mark_for_push, publisher, record_change, request_push, sweep
from .push.send import Outcome, PushResult, loggable, push, redact
from .webhooks.events import handle_event

__all__ = [
    "Busy",
    "CatchUpStats",
    "Outcome",
    "OwnerSyncResult",
    "Paused",
    "PullStats",
    "PushResult",
    "ReconcileStats",
    "RetryLater",
    "catch_up",
    "check_owner",
    "check_related",
    "drain",
    "for_owner",
    "get_or_create_for",
    "handle_event",
    "loggable",
    "mark_for_push",
    "publisher",
    "pull",
    "pull_one",
    "push",
    "reconcile",
    "record_change",
    "redact",
    "request_push",
    "status",
    "sweep",
    "sync_from_owners",
    "unsent",
]
