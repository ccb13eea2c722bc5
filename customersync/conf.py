"""The app's settings: one ``CUSTOMERSYNC`` dict, read lazily through ``app_settings``.

Read at use, never at import time, and refreshed on ``setting_changed`` so
``override_settings(CUSTOMERSYNC=...)`` works in tests.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from .exceptions import ConfigurationError
from .stripe.client import DEFAULT_API_BASE, DEFAULT_API_VERSION

DEFAULTS: dict[str, Any] = {
    # Secret (sk_...) or restricted (rk_...) key. Required to talk to Stripe.
    "API_KEY": None,
    # Where the API lives; point it at a fake server in tests and demos.
    "API_BASE": DEFAULT_API_BASE,
    # Pinned on every request, so Stripe's answers keep the shape we parse.
    "API_VERSION": DEFAULT_API_VERSION,
    # Seconds to wait for a connection and for each read, on every request.
    "TIMEOUT": 20.0,
    # Seconds a whole request may take: connecting, sending, and Stripe's entire
    # answer (headers and body). Past it the request is cut and retried like a
    # network error, so a server that answers a byte at a time cannot hold a
    # customer's lease; keep LEASE_SECONDS at least 2 * this + 10 (check E030).
    "REQUEST_DEADLINE": 30.0,
    # Celery queue for push tasks; None uses the site's default routing.
    "QUEUE": None,
    # Enqueue a push on commit when a save changes a synced field.
    "PUSH_ON_SAVE": True,
    # Retries of one change after errors that may pass (network, 409, 429, 5xx,
    # Stripe-Should-Retry: true); then the customer is marked failed.
    "MAX_RETRIES": 5,
    # A frozen change older than this (seconds) is not resent under its
    # idempotency key (Stripe keeps keys 24 hours); its diff is recomputed.
    "RETRY_HORIZON": 6 * 3600,
    # How long (seconds) a worker's claim on a customer lasts if it dies
    # without releasing it; a dead process on the same host is replaced at once.
    "LEASE_SECONDS": 120,
    # The sweeper queues again outbox records that waited this long (seconds).
    "SWEEP_AFTER": 60,
    # Seconds to wait for the broker when queueing a push after a save.
    "BROKER_TIMEOUT": 2.0,
    # Customers per page when pulling (Stripe's maximum is 100).
    "PAGE_SIZE": 100,
    # Pushes per second for the whole fleet, shared through Redis (Stripe allows
    # about 25 customer updates a second per account; leave room for the rest
    # of the site). 0 or None: no budget.
    "RATE_LIMIT": 20,
    # The Redis holding the budget; None: the Celery broker's, if it is Redis
    # (otherwise the budget is per process).
    "RATE_LIMIT_REDIS_URL": None,
    # "paced" (reserved times, and a log of when requests were really written: ~0.98 of the
    # budget), "window" (sliding-window log of grants, 0.1 s of slack: ~0.93) or "bucket".
    "RATE_LIMIT_ALGORITHM": "paced",
    # Seconds every worker pauses after Stripe answers 429 rate_limit.
    "RATE_LIMIT_PAUSE": 2.0,
    # Seconds a queued push waits before it runs, so a burst of saves becomes
    # one request (saves during the wait join the queued push).
    "COALESCE_SECONDS": 0.25,
    # Queue push tasks from a background thread after commit, so a save makes
    # no network call (the outbox and the sweeper cover a process that dies first).
    "PUBLISH_IN_BACKGROUND": True,
    # Requests per second a pull may make (list pages, retrieves).
    "PULL_RATE": 20.0,
    # The share of an account's rate budget (RATE_LIMIT) a catch-up or a reconcile may use,
    # from 0 to 1; pushes keep the rest. Without a budget they go at this share of PULL_RATE.
    "CATCH_UP_SHARE": 0.25,
    # Seconds between reconciles of each account, started by the customersync.catch_up task
    # (run by Celery beat); None: reconciles run only on demand.
    "RECONCILE_EVERY": 7 * 24 * 3600,
    # When Stripe changed a field an operator also changed here and not yet
    # pushed: "local_wins" (the edit is pushed over it) or "remote_wins".
    "CONFLICT_POLICY": "local_wins",
    # Signing secret of the webhook endpoint (whsec_...), for the webhook view; a
    # list of secrets while Stripe rolls it (it signs with both for a while).
    "WEBHOOK_SECRET": None,
    # Signing secret(s) of the Connect endpoint (events of connected accounts).
    "CONNECT_WEBHOOK_SECRET": None,
    # More Stripe platforms beside the default one (API_KEY above):
    # {"eu": {"API_KEY": ..., "WEBHOOK_SECRET": ..., "CONNECT_WEBHOOK_SECRET": ...,
    #  "RATE_LIMIT": ...}}. Customers name their account (a platform, or one of its
    # connected accounts) by customersync.Account rows; see accounts.py.
    "PLATFORMS": {},
    # Seconds a webhook signature's timestamp may be old.
    "WEBHOOK_TOLERANCE": 300,
    # Delete the customer in Stripe when it is deleted here.
    "DELETE_IN_STRIPE": False,
    # The site's model that owns customers ("accounts.Organization", or
    # AUTH_USER_MODEL's value): Customer gets a foreign key to it. Choose it
    # before the first migrate; None: no link.
    "OWNER_MODEL": None,
    # Which customer parameters come from which owner attributes:
    # {"email": "billing_email", "address[city]": "city", "metadata[org_id]": "pk",
    #  "name": "get_full_name", "description": callable}. See owner/mapping.py.
    "OWNER_FIELDS": {},
    # Mapped parameters Stripe may change too (the Billing Portal, the dashboard):
    # written back to the owner when a webhook or pull brings them ("address"
    # covers every mapped address[...] key).
    "OWNER_BOTH_WAYS": (),
    # customersync_status and sync.status(): an account is critical when its oldest
    # ready push waited longer than this (seconds), and warns past half of it.
    "STATUS_MAX_READY_AGE": 300,
    # Critical when more customers than this failed to sync; any failed customer warns.
    "STATUS_MAX_FAILED": 10,
    # Warn when an account's last webhook event is older than this (seconds); None: not checked
    # (an account whose customers rarely change in Stripe may go days without one).
    "STATUS_MAX_WEBHOOK_AGE": None,
}

REQUIRED = ("API_KEY",)
# What to add, for each required key that is missing or empty.
MISSING = {
    "API_KEY": (
        "CUSTOMERSYNC['API_KEY'] is not set: customersync needs your Stripe secret key (sk_... or rk_...). "
        "Put it in the STRIPE_API_KEY environment variable and read it in your settings: "
        'CUSTOMERSYNC = {"API_KEY": os.environ.get("STRIPE_API_KEY")}.'
    ),
}


class AppSettings:
    """Attribute access to ``settings.CUSTOMERSYNC`` merged over ``DEFAULTS``."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._cache is None:
            user = getattr(settings, "CUSTOMERSYNC", {}) or {}
            unknown = set(user) - set(DEFAULTS)
            if unknown:
                raise ConfigurationError(
                    f"Unknown key(s) in settings.CUSTOMERSYNC: {', '.join(sorted(unknown))}. "
                    f"Known keys: {', '.join(DEFAULTS)}."
                )
            self._cache = {**DEFAULTS, **user}
        return self._cache

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(name)
        value = self._load()[name]
        if not value and name in REQUIRED:
            raise ConfigurationError(MISSING[name])
        return value

    def get(self, name: str) -> Any:
        """The value of ``name`` without raising for a missing required one."""
        return self._load()[name]

    def reload(self) -> None:
        self._cache = None


app_settings = AppSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "CUSTOMERSYNC":
        app_settings.reload()


setting_changed.connect(_reload, dispatch_uid="customersync.conf.reload")


def owner_model_label() -> str | None:
    """``CUSTOMERSYNC['OWNER_MODEL']``, read when the models are defined (not refreshed by override_settings)."""
    value = (getattr(settings, "CUSTOMERSYNC", None) or {}).get("OWNER_MODEL")
    return str(value) if value else None
