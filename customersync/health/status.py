"""``status()``: the sync's figures per account, from the database where they are state and from
the records the app already writes where they are events.

State (every process reading the database agrees on it): the outbox records waiting and ready
(``PendingPush``), the customers whose sync failed (``Customer.sync_status``), the events
cursor (``EventCursor``). Events within the window, counted from the rows that record them:
pushes and Stripe's answers (the sync log, ``PushAttempt``), 429 pauses (the sync log's 429
answers), conflicts (``Conflict``), lease takeovers (``PushLease.taken_over_at``), webhook
events (``WebhookEvent``). Two figures live in Redis, beside the rate budget: the share of an
account's budget used in the last second, and bad webhook signatures (``counters``).

The number of queries is fixed (eight): it grows with neither customers nor accounts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Exists, Max, Min, OuterRef, Q
from django.utils import timezone

from .. import accounts
from ..conf import app_settings
from ..exceptions import CustomerSyncError
from ..models import (
    Account,
    AttemptOutcome,
    Conflict,
    Customer,
    EventCursor,
    PendingPush,
    PushAttempt,
    PushLease,
    PushState,
    SyncStatus,
    WebhookEvent,
)
from ..stripe import rate_budget
from . import counters

HEALTHY, WARNING, CRITICAL = 0, 1, 2
DEFAULT = accounts.DEFAULT
# The longest a retried push is held back by the task's backoff (``tasks.backoff``: at most 5 s).
LONGEST_BACKOFF = 5.0


class UnknownAccount(CustomerSyncError, LookupError):
    """``status(account=...)`` named no account this site has."""


@dataclass(frozen=True)
class Problem:
    """One reason an account is not healthy: its ``level`` (``WARNING`` or ``CRITICAL``) and what is wrong."""

    level: int
    text: str


@dataclass(frozen=True)
class AccountStatus:
    """One account's figures. Ages are seconds; ``None``: nothing to measure."""

    account: str  # "default", a platform's own account (its name), or "platform/acct_..."
    waiting: int  # open outbox records: pending, or frozen and being sent
    ready: int  # waiting and due now: not in the coalescing wait, not backing off after a retryable error
    oldest_ready_age: float | None  # since the oldest ready record's change was recorded
    failed: int  # customers whose sync failed
    conflicts: int  # conflicts recorded within the window
    pushes: dict[str, int]  # requests sent within the window, by their outcome in the sync log
    answers: dict[str, int]  # Stripe's answers within the window, by HTTP status ("none": no answer)
    pauses: int  # 429 rate-limit answers within the window: each paused the account's budget
    lease_takeovers: int  # customers whose lease was taken from an expired or dead holder within the window
    webhooks: dict[str, int]  # webhook events received within the window, by outcome
    bad_signatures: int | None  # deliveries refused for their signature within the window (None: no Redis)
    last_webhook_age: float | None  # None: none within the window (or twice STATUS_MAX_WEBHOOK_AGE, if longer)
    last_catch_up_age: float | None  # since the catch-up last reached the end of the events log
    catch_up_behind: bool  # the events log could not reach the cursor: a reconcile is due
    budget_used: float | None  # share of the rate budget used in the last second (None: no shared budget)

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready values."""
        return dataclasses.asdict(self)

    def problems(
        self,
        max_ready_age: float | None = None,
        max_failed: int | None = None,
        max_webhook_age: float | None = None,
    ) -> list[Problem]:
        """What is wrong, by the thresholds given or else the ``STATUS_*`` settings.

        Critical: the oldest ready record is older than ``max_ready_age``, or more than
        ``max_failed`` customers failed. Warning: the oldest ready record is older than half
        ``max_ready_age``; any customer failed; a 429 pause, a lease takeover or a bad signature
        within the window; the catch-up behind; no webhook for ``max_webhook_age`` (when set).
        """
        max_ready_age = app_settings.STATUS_MAX_READY_AGE if max_ready_age is None else max_ready_age
        max_failed = app_settings.STATUS_MAX_FAILED if max_failed is None else max_failed
        max_webhook_age = app_settings.STATUS_MAX_WEBHOOK_AGE if max_webhook_age is None else max_webhook_age
        found: list[Problem] = []
        age = self.oldest_ready_age
        if age is not None and age > max_ready_age:
            found.append(
                Problem(CRITICAL, f"oldest ready push waited {age:.0f} s (critical above {max_ready_age:g} s)")
            )
        elif age is not None and age > max_ready_age / 2:
            found.append(
                Problem(WARNING, f"oldest ready push waited {age:.0f} s (warning above {max_ready_age / 2:g} s)")
            )
        if self.failed > max_failed:
            found.append(
                Problem(CRITICAL, f"{count(self.failed, 'customer', 'customers')} failed (critical above {max_failed})")
            )
        elif self.failed:
            found.append(Problem(WARNING, f"{count(self.failed, 'customer', 'customers')} failed"))
        if self.pauses:
            found.append(
                Problem(WARNING, f"{count(self.pauses, 'rate-limit pause', 'rate-limit pauses')} (Stripe answered 429)")
            )
        if self.lease_takeovers:
            found.append(
                Problem(
                    WARNING,
                    f"{count(self.lease_takeovers, 'lease takeover', 'lease takeovers')}: a worker died or stalled",
                )
            )
        if self.bad_signatures:
            found.append(
                Problem(WARNING, f"{count(self.bad_signatures, 'webhook', 'webhooks')} refused for a bad signature")
            )
        if self.catch_up_behind:
            found.append(Problem(WARNING, "the events log cannot reach the catch-up's cursor: a reconcile is due"))
        if max_webhook_age:
            if self.last_webhook_age is None:
                found.append(Problem(WARNING, f"no webhook within the last {max_webhook_age:g} s"))
            elif self.last_webhook_age > max_webhook_age:
                found.append(
                    Problem(
                        WARNING,
                        f"last webhook {self.last_webhook_age:.0f} s ago (warning above {max_webhook_age:g} s)",
                    )
                )
        return found

    def level(
        self, max_ready_age: float | None = None, max_failed: int | None = None, max_webhook_age: float | None = None
    ) -> int:
        """``HEALTHY`` (0), ``WARNING`` (1) or ``CRITICAL`` (2): the worst of ``problems()``."""
        return max((p.level for p in self.problems(max_ready_age, max_failed, max_webhook_age)), default=HEALTHY)


@dataclass(frozen=True)
class Status:
    """The figures of every account (or the one asked for), read at ``generated_at``; event
    figures count the ``window`` seconds before it."""

    accounts: tuple[AccountStatus, ...]
    generated_at: dt.datetime
    window: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at.isoformat(),
            "window": self.window,
            "accounts": [account.to_dict() for account in self.accounts],
        }

    def level(
        self, max_ready_age: float | None = None, max_failed: int | None = None, max_webhook_age: float | None = None
    ) -> int:
        """The worst level of the accounts."""
        return max((a.level(max_ready_age, max_failed, max_webhook_age) for a in self.accounts), default=HEALTHY)


@dataclass
class _Account:
    """An account being counted: its name, its ``Account`` (None: the default platform's own) and its figures."""

    name: str
    row: Account | None
    platform: str
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)


def count(n: int, singular: str, plural: str) -> str:
    """``1 customer``, ``2 customers``: a problem's count with its noun (the problems are English,
    as the logs are)."""
    return f"{n} {singular if n == 1 else plural}"


def account_name(platform: str, stripe_account: str) -> str:
    """An account's name in the figures: ``"default"``, a platform's name, or ``"platform/acct_..."``."""
    return f"{platform}/{stripe_account}" if stripe_account else platform


def status(account: str | None = None, *, window: float = 3600) -> Status:
    """The sync's figures per account (``account``: only that one, by its name; ``UnknownAccount``
    when there is none). Event figures count the last ``window`` seconds."""
    now = timezone.now()
    since = now - dt.timedelta(seconds=window)
    known = _accounts()
    if account is not None and account not in {a.name for a in known}:
        raise UnknownAccount(f"No account {account!r} (known: {', '.join(a.name for a in known)}).")
    by_pk = {(a.row.pk if a.row is not None else None): a for a in known if a.row is None or a.row.pk is not None}
    by_id = {(a.platform, a.row.stripe_account if a.row is not None else ""): a for a in known}

    def of(account_id: int | None) -> dict[str, Any] | None:
        found = by_pk.get(account_id)
        return None if found is None else found.figures

    _outbox(now, of)
    for account_id, n in (
        Customer.objects.filter(sync_status=SyncStatus.FAILED).values_list("account_id").annotate(n=Count("pk"))
    ):
        if (figures := of(account_id)) is not None:
            figures["failed"] = n
    for account_id, n in (
        Conflict.objects.filter(detected_at__gte=since).values_list("customer__account_id").annotate(n=Count("pk"))
    ):
        if (figures := of(account_id)) is not None:
            figures["conflicts"] = n
    _sync_log(since, of)
    for account_id, n in (
        PushLease.objects.filter(taken_over_at__gte=since).values_list("customer__account_id").annotate(n=Count("pk"))
    ):
        if (figures := of(account_id)) is not None:
            figures["lease_takeovers"] = n
    _webhooks(now, since, by_id)
    _cursors(now, known)
    bad = counters.bad_signatures(sorted({a.platform for a in known}), window)
    for found in known:
        own = found.row is None or not found.row.stripe_account
        found.figures["bad_signatures"] = (bad.get(found.platform, 0) if own else 0) if bad is not None else None
        found.figures["budget_used"] = _budget_used(found)
    chosen = [a for a in known if account is None or a.name == account]
    return Status(tuple(_figures(a, now) for a in chosen), now, float(window))


def _accounts() -> list[_Account]:
    """Every account: the default platform's own, each ``Account`` row, and each platform's own
    account that has no row."""
    found = [_Account(DEFAULT, None, DEFAULT)]
    own = {DEFAULT}
    for row in Account.objects.order_by("platform", "stripe_account"):
        found.append(_Account(account_name(row.platform, row.stripe_account), row, row.platform))
        if not row.stripe_account:
            own.add(row.platform)
    for platform in accounts.platforms():
        if platform not in own:
            # No row: nothing is mirrored there, but its endpoint's events and signatures count.
            found.append(_Account(platform, Account(platform=platform, stripe_account=""), platform))
    return found


def _outbox(now: dt.datetime, of: Any) -> None:
    """Waiting and ready records, and the oldest ready one's change: one query.

    A record is held back, not ready, while its task's coalescing countdown runs (recorded
    less than ``COALESCE_SECONDS`` ago) or while its last attempt's retry waits out the
    backoff or a 429 pause (finished less than the longest of those ago, as a retry).
    """
    coalesced = now - dt.timedelta(seconds=float(app_settings.COALESCE_SECONDS or 0))
    held = max(LONGEST_BACKOFF, float(app_settings.RATE_LIMIT_PAUSE or 0)) + 0.5
    backing_off = PushAttempt.objects.filter(
        push=OuterRef("pk"), outcome=AttemptOutcome.RETRY, finished_at__gt=now - dt.timedelta(seconds=held)
    )
    ready = (Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=coalesced)) & Q(backing_off=False)
    rows = (
        PendingPush.objects.filter(state__in=[PushState.PENDING, PushState.SENDING])
        .annotate(backing_off=Exists(backing_off))
        .values_list("customer__account_id")
        .annotate(waiting=Count("pk"), ready=Count("pk", filter=ready), oldest=Min("created_at", filter=ready))
        .order_by()
    )
    for account_id, waiting, ready_count, oldest in rows:
        if (figures := of(account_id)) is not None:
            figures.update(waiting=waiting, ready=ready_count, oldest_ready=oldest)


def _sync_log(since: dt.datetime, of: Any) -> None:
    """Requests by outcome, answers by HTTP status and 429 pauses within the window: one query.

    A 429 ``lock_timeout`` (another request held the customer) pauses nothing; the attempt a
    pause stopped before its request went has no HTTP status and is no answer.
    """
    pause = Q(http_status=429) & ~Q(error_code="lock_timeout")
    rows = (
        PushAttempt.objects.filter(started_at__gte=since)
        .values_list("customer__account_id", "outcome", "http_status")
        .annotate(n=Count("pk"), pauses=Count("pk", filter=pause))
        .order_by()
    )
    for account_id, outcome, http_status, n, pauses in rows:
        if (figures := of(account_id)) is None:
            continue
        pushes = figures.setdefault("pushes", defaultdict(int))
        answers = figures.setdefault("answers", defaultdict(int))
        pushes[outcome] += n
        if http_status is not None:
            answers[str(http_status)] += n
        elif outcome == AttemptOutcome.SUCCEEDED:
            answers["200"] += n
        figures["pauses"] = figures.get("pauses", 0) + pauses


def _webhooks(now: dt.datetime, since: dt.datetime, by_id: dict[tuple[str, str], _Account]) -> None:
    """Webhook events within the window by outcome, and each account's last one, per account: one
    query, a range of the ``received_at`` index. The last one is looked for over the window or twice
    ``STATUS_MAX_WEBHOOK_AGE``, whichever is longer: a read bounded by the events in that span,
    never a walk through every event for an account that has none. An event of an account not
    mirrored counts for its platform's own account."""
    horizon = min(since, now - dt.timedelta(seconds=2 * float(app_settings.STATUS_MAX_WEBHOOK_AGE or 0)))
    rows = (
        WebhookEvent.objects.filter(received_at__gte=horizon)
        .values_list("platform", "stripe_account", "outcome")
        .annotate(n=Count("pk", filter=Q(received_at__gte=since)), last=Max("received_at"))
        .order_by()
    )
    for platform, stripe_account, outcome, n, last in rows:
        found = by_id.get((platform, stripe_account)) or by_id.get((platform, ""))
        if found is None:
            continue
        if n:
            webhooks = found.figures.setdefault("webhooks", defaultdict(int))
            webhooks[outcome] += n
        if found.figures.get("last_webhook") is None or last > found.figures["last_webhook"]:
            found.figures["last_webhook"] = last


def _cursors(now: dt.datetime, known: list[_Account]) -> None:
    """The catch-up's last run to the end and whether it is behind, from the events cursors: one query."""
    by_key = {
        ("default" if a.row is None else str(a.row.pk)): a for a in known if a.row is None or a.row.pk is not None
    }
    for key, caught_up_at, behind in EventCursor.objects.values_list("key", "caught_up_at", "behind"):
        found = by_key.get(key)
        if found is not None:
            found.figures.update(caught_up=caught_up_at, behind=bool(behind))


def _budget_used(found: _Account) -> float | None:
    """The share of the account's shared rate budget used in the last second (Redis), or None."""
    try:
        platform = accounts.platform(found.platform)
    except CustomerSyncError:
        return None
    limiter = rate_budget.budget(accounts.budget_name(found.row), platform.rate_limit)
    used = getattr(limiter, "used", None)
    if used is None:
        return None
    try:
        return float(used())
    except Exception:  # noqa: BLE001 - Redis away: the figure is unknown, the others stand
        return None


def _age(now: dt.datetime, when: dt.datetime | None) -> float | None:
    return None if when is None else max(0.0, (now - when).total_seconds())


def _figures(found: _Account, now: dt.datetime) -> AccountStatus:
    figures = found.figures
    return AccountStatus(
        account=found.name,
        waiting=figures.get("waiting", 0),
        ready=figures.get("ready", 0),
        oldest_ready_age=_age(now, figures.get("oldest_ready")),
        failed=figures.get("failed", 0),
        conflicts=figures.get("conflicts", 0),
        pushes=dict(sorted(figures.get("pushes", {}).items())),
        answers=dict(sorted(figures.get("answers", {}).items())),
        pauses=figures.get("pauses", 0),
        lease_takeovers=figures.get("lease_takeovers", 0),
        webhooks=dict(sorted(figures.get("webhooks", {}).items())),
        bad_signatures=figures.get("bad_signatures"),
        last_webhook_age=_age(now, figures.get("last_webhook")),
        last_catch_up_age=_age(now, figures.get("caught_up")),
        catch_up_behind=figures.get("behind", False),
        budget_used=figures.get("budget_used"),
    )
