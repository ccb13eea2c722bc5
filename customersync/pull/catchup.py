"""After an outage, the mirror catches up by itself: Stripe's events log, and the reconcile.

``catch_up`` lists an account's ``customer.created``, ``customer.updated`` and
``customer.deleted`` events after its ``EventCursor`` (``GET /v1/events`` with
``types[]``, paged with ``ending_before``, so each page holds the events just
newer than the cursor) and applies them oldest first through the webhook's own
``handle_event``: each event once per platform (a webhook delivered later is a
duplicate), a stale one ignored, the echo of this app's own push recognised,
both-ways owner fields written back. An event made under another API version
than ``CUSTOMERSYNC['API_VERSION']`` is not trusted for its payload: the
customer is fetched again and that object applied. The cursor moves in the
transaction that applies each event, so a run stopped anywhere resumes after
the last event applied. Without a cursor the first run starts from the newest
event (the mirror is taken as caught up then), or from ``since``.

Stripe keeps events 30 days. A cursor the log cannot reach (its event is gone,
or it is older than 30 days) is logged as an ERROR naming the account,
recorded on the cursor (``behind``), and the account is reconciled instead;
the cursor then starts again from the newest event seen before the reconcile.

``reconcile`` walks the account's customers (``GET /v1/customers``, 100 a page,
through the pull's ``store_page``: constant queries per page, one page in
memory) and compares each with the mirror: a field that differs with no local
change pending is drift (a ``Drift`` row, set to Stripe's value), a customer
Stripe has and the mirror lacks is added, and customers the walk did not meet
(their ``last_pulled_at`` is before the walk began) are marked deleted. Local
edits not yet pushed are kept, as a pull keeps them. The walk resumes where it
stopped. Stripe's list leaves out customers attached to a test clock, so the
reconcile never marks those deleted.

Both go through the account's rate budget and use at most
``CUSTOMERSYNC['CATCH_UP_SHARE']`` of it (``Share``), so pushes keep the rest.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.db import router, transaction
from django.db.models import F, Q
from django.utils import timezone

from .. import accounts
from ..conf import app_settings
from ..core.merge import norm
from ..core.params import TABLE, get_path
from ..exceptions import APIError, ConfigurationError, EventError, StripeError
from ..models import Account, Customer, Drift, EventCursor, SyncStatus
from ..stripe import rate_budget
from ..stripe.client import StripeClient
from ..webhooks.events import CUSTOMER_EVENTS, handle_event
from .pages import PullStats, read_ahead, store_page

logger = logging.getLogger("customersync")

__all__ = [
    "RETENTION",
    "CatchUpStats",
    "ReconcileStats",
    "Share",
    "CursorHeld",
    "catch_up",
    "reconcile",
    "reconcile_due",
    "cursor_of",
]

# How long Stripe keeps events listable.
RETENTION = dt.timedelta(days=30)
EVENT_TYPES = tuple(sorted(CUSTOMER_EVENTS))
PAGE = 100
# How long a run holds its account's cursor without renewing it (each page renews it).
HOLD = dt.timedelta(minutes=10)


class CursorHeld(Exception):
    """Another run (catch-up or reconcile) holds this account's cursor."""


@dataclass
class CatchUpStats:
    """What a catch-up did: ``applied`` events handed to ``handle_event`` (with what each did in
    ``outcomes``), ``skipped`` (refused as unusable: the cursor moves past them), ``pages`` read;
    ``reconciled``: the reconcile run because the cursor was out of the log's reach."""

    applied: int = 0
    skipped: int = 0
    pages: int = 0
    started: bool = False
    reconciled: ReconcileStats | None = None

    def __post_init__(self) -> None:
        self.outcomes: dict[str, int] = {}


@dataclass
class ReconcileStats:
    """A reconcile's figures, for the whole walk (a resumed walk counts what it did before too)."""

    seen: int = 0
    drifted: int = 0
    deleted: int = 0
    added: int = 0


class Share:
    """A request's turn at ``CATCH_UP_SHARE`` of the account's rate budget (``before_send`` of the client).

    Two budgets: the catch-up's own, at ``share * rate`` for every worker of the fleet
    (``"<account budget>:catch-up"``), and then the account's, shared with the pushes, so all
    requests together stay within the rate and the catch-up never takes more than its share.
    Without a budget (RATE_LIMIT 0), requests go at the share of ``PULL_RATE``, in this process
    (``PULL_RATE`` 0: not paced).
    """

    def __init__(self, account: Account | None) -> None:
        platform = accounts.platform_of(account)
        name = accounts.budget_name(account)
        share = app_settings.CATCH_UP_SHARE
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise ConfigurationError(
                f"CUSTOMERSYNC['CATCH_UP_SHARE'] is a number more than 0 and at most 1, not {share!r}."
            )
        self.own: Any
        self.shared = rate_budget.budget(name, platform.rate_limit)
        rate = platform.rate_limit or app_settings.RATE_LIMIT
        if self.shared is not None:
            self.own = rate_budget.budget(f"{name}:catch-up", float(rate) * share)
        elif app_settings.PULL_RATE:
            self.own = rate_budget.LocalBudget(float(app_settings.PULL_RATE) * share)
        else:
            self.own = None  # no budget and PULL_RATE 0: not paced, as a pull

    def __call__(self) -> Any:
        if self.own is not None:
            self.own.acquire()
        if self.shared is None:
            return None
        self.shared.acquire()
        return self.shared.sending()


def _key(account: Account | None) -> str:
    return "default" if account is None else str(account.pk)


def cursor_of(account: Any = None) -> EventCursor:
    """The account's ``EventCursor`` (created empty when it has none)."""
    account = accounts.resolve(account)
    cursors = EventCursor.objects.using(router.db_for_write(EventCursor))
    found, _created = cursors.get_or_create(key=_key(account), defaults={"account": account})
    return found


def _name(account: Account | None) -> str:
    return "the default platform's own account" if account is None else f"account {account}"


class _Hold:
    """The account's cursor, held by this run (``running_until``), renewed each page."""

    def __init__(self, account: Account | None) -> None:
        self.account = account
        self.cursors = EventCursor.objects.using(router.db_for_write(EventCursor))
        self.key = cursor_of(account).key

    def __enter__(self) -> _Hold:
        now = timezone.now()
        free = Q(running_until=None) | Q(running_until__lt=now)
        if not self.cursors.filter(key=self.key).filter(free).update(running_until=now + HOLD):
            raise CursorHeld(f"Another catch-up or reconcile of {_name(self.account)} is running.")
        return self

    def renew(self) -> None:
        self.cursors.filter(key=self.key).update(running_until=timezone.now() + HOLD)

    def read(self) -> EventCursor:
        return self.cursors.get(key=self.key)

    def __exit__(self, *exc_info: object) -> None:
        self.cursors.filter(key=self.key).update(running_until=None)


# -- catch-up -------------------------------------------------------------------------------------


class _OutOfReach(Exception):
    pass


def catch_up(
    account: Any = None,
    *,
    since: dt.datetime | None = None,
    client: StripeClient | None = None,
    page_size: int | None = None,
) -> CatchUpStats:
    """Apply ``account``'s customer events after its cursor, oldest first (see the module).

    ``since``: start from the events created at or after this time instead of the cursor;
    ``page_size``: events a page (default 100, Stripe's most).
    Raises ``StripeError`` when Stripe could not be asked (the cursor stays after the last
    event applied), ``Paused`` while the account's budget is paused, ``CursorHeld`` when another
    run holds the account.
    """
    account = accounts.resolve(account)
    client = client or accounts.stripe_client(account)
    share = Share(account)
    stats = CatchUpStats()
    with _Hold(account) as hold:
        cursor = hold.read()
        if since is not None:
            hold.cursors.filter(key=hold.key).update(event_id="", event_created=since)
        elif not cursor.event_id and cursor.event_created is None:
            _start_from_newest(hold, client, share)
            stats.started = True
            return stats
        try:
            _walk(hold, client, share, stats, page_size or PAGE)
        except _OutOfReach as err:
            reason = str(err)
            logger.error(
                "The events log of %s cannot reach its cursor (%s): reconciling the account instead.",
                _name(account),
                reason,
            )
            hold.cursors.filter(key=hold.key).update(behind=reason, behind_at=timezone.now())
            _start_from_newest(hold, client, share)  # events during the reconcile come next time
            stats.reconciled = _reconcile(hold, client, share)
    return stats


def _start_from_newest(hold: _Hold, client: StripeClient, share: Share) -> None:
    """Put the cursor on the newest customer event (none: on this second), deliberately skipping the rest."""
    page = client.list_events(types=EVENT_TYPES, limit=1, before_send=share)
    data = _events(page)
    if data:
        newest = data[0]
        at = dt.datetime.fromtimestamp(newest["created"], tz=dt.timezone.utc)
        hold.cursors.filter(key=hold.key).update(event_id=newest["id"], event_created=at, caught_up_at=timezone.now())
    else:
        now = timezone.now().replace(microsecond=0)
        hold.cursors.filter(key=hold.key).update(event_id="", event_created=now, caught_up_at=timezone.now())


def _events(page: Any) -> list[dict[str, Any]]:
    data = page.get("data") if isinstance(page, dict) else None
    if not isinstance(data, list) or not all(
        isinstance(e, dict) and isinstance(e.get("id"), str) and isinstance(e.get("created"), int) for e in data
    ):
        raise APIError("Stripe's events list is not a list of events with ids and times.", http_status=200)
    return data


def _walk(hold: _Hold, client: StripeClient, share: Share, stats: CatchUpStats, size: int) -> None:
    cursor = hold.read()
    if cursor.event_created is not None and cursor.event_created < timezone.now() - RETENTION:
        raise _OutOfReach(f"its last event is from {cursor.event_created:%Y-%m-%d %H:%M:%S} UTC, over 30 days ago")
    anchor = cursor.event_id or _oldest_since(client, share, cursor, hold, stats, size)
    while anchor:
        try:
            page = client.list_events(types=EVENT_TYPES, limit=size, ending_before=anchor, before_send=share)
        except StripeError as err:
            if err.http_status == 404 or getattr(err, "code", None) == "resource_missing":
                raise _OutOfReach(f"Stripe no longer lists its last event {anchor}") from None
            raise
        data = _events(page)
        stats.pages += 1
        for event in reversed(data):  # a page is newest first: apply oldest first
            _apply(event, hold, client, share, stats)
        hold.renew()
        if not page.get("has_more") or not data or data[0]["id"] == anchor:
            break
        anchor = data[0]["id"]
    hold.cursors.filter(key=hold.key).update(caught_up_at=timezone.now())


def _oldest_since(
    client: StripeClient, share: Share, cursor: EventCursor, hold: _Hold, stats: CatchUpStats, size: int
) -> str:
    """With a time and no event (``since``, or a first run that met no event): apply the oldest
    event created since then, found by walking the list back to it (one page in memory), and
    answer its id, from which the walk goes forward; "" when there is none."""
    created = {"gte": int(cursor.event_created.timestamp())} if cursor.event_created else None
    oldest: dict[str, Any] | None = None
    after: str | None = None
    while True:
        page = client.list_events(
            types=EVENT_TYPES, limit=size, starting_after=after, created=created, before_send=share
        )
        data = _events(page)
        stats.pages += 1
        if data:
            oldest = data[-1]
        if not page.get("has_more") or not data or data[-1]["id"] == after:
            break
        after = data[-1]["id"]
    if oldest is None:
        return ""
    _apply(oldest, hold, client, share, stats)
    return str(oldest["id"])


def _apply(event: dict[str, Any], hold: _Hold, client: StripeClient, share: Share, stats: CatchUpStats) -> None:
    """Apply one event through the webhook's path and move the cursor past it, in one transaction."""
    account = hold.account
    if event.get("api_version") != app_settings.API_VERSION:
        event = _refetched(event, client, share, account)
    at = dt.datetime.fromtimestamp(event["created"], tz=dt.timezone.utc)
    using = router.db_for_write(EventCursor)
    with transaction.atomic(using=using):
        try:
            said = handle_event(event, account=account)
        except EventError as err:
            logger.warning("Catch-up of %s skipped event %s: %s", _name(account), event.get("id"), err)
            stats.skipped += 1
            said = "skipped"
        else:
            stats.applied += 1
        stats.outcomes[said] = stats.outcomes.get(said, 0) + 1
        hold.cursors.filter(key=hold.key).update(event_id=event["id"], event_created=at, applied=F("applied") + 1)


def _refetched(event: dict[str, Any], client: StripeClient, share: Share, account: Account | None) -> dict[str, Any]:
    """The event with the customer as Stripe answers it under the configured API version."""
    obj = (event.get("data") or {}).get("object")
    if not isinstance(obj, dict) or obj.get("object") != "customer" or not isinstance(obj.get("id"), str):
        return event
    try:
        fresh: dict[str, Any] = dict(client.retrieve_customer(obj["id"], before_send=share))
    except StripeError as err:
        if err.http_status != 404:
            raise
        fresh = {"id": obj["id"], "object": "customer", "deleted": True}
    if fresh.get("id") != obj["id"]:
        raise APIError(
            f"Stripe answered the refresh of {obj['id']} with another customer's id: refused.", http_status=200
        )
    refreshed = copy.copy(event)
    refreshed["data"] = {**event["data"], "object": fresh}
    return refreshed


# -- reconcile ------------------------------------------------------------------------------------


def reconcile(
    account: Any = None, *, client: StripeClient | None = None, page_size: int | None = None
) -> ReconcileStats:
    """Walk ``account``'s customers in Stripe and bring the mirror to them (see the module);
    resumes an interrupted walk. Raises ``StripeError``, ``Paused`` and ``CursorHeld`` as ``catch_up``."""
    account = accounts.resolve(account)
    client = client or accounts.stripe_client(account)
    with _Hold(account) as hold:
        return _reconcile(hold, client, Share(account), page_size=page_size)


def _reconcile(hold: _Hold, client: StripeClient, share: Share, *, page_size: int | None = None) -> ReconcileStats:
    account = hold.account
    cursor = hold.read()
    cursors = hold.cursors
    using = router.db_for_write(Customer)
    unfinished = _unfinished(cursor)
    if not unfinished:
        cursors.filter(key=hold.key).update(
            reconcile_started_at=timezone.now(), reconcile_after="", seen=0, drifted=0, deleted=0, added=0
        )
        cursor = hold.read()
    started = cursor.reconcile_started_at
    assert started is not None
    logger.info("Reconcile of %s %s.", _name(account), "resumed" if unfinished else "started")
    pages = client.iter_customers(
        limit=page_size or app_settings.PAGE_SIZE, starting_after=cursor.reconcile_after or None, before_send=share
    )
    for data in read_ahead(pages):  # the next page travels while this one is written
        with transaction.atomic(using=using):
            drift = _drift(data, account, using)
            stats = PullStats()
            store_page(data, stats, source="reconcile", account=account)
            if drift:
                Drift.objects.using(using).bulk_create(drift)
            cursors.filter(key=hold.key).update(
                reconcile_after=data[-1]["id"],
                seen=F("seen") + len(data),
                drifted=F("drifted") + len({d.customer.pk for d in drift}),
                added=F("added") + stats.created,
                running_until=timezone.now() + HOLD,
            )
    gone = (
        Customer.objects.using(using)
        .filter(account=account)
        .exclude(stripe_id=None)
        .exclude(sync_status=SyncStatus.DELETED)
        .filter(Q(last_pulled_at__lt=started) | Q(last_pulled_at=None))
        .exclude(confirmed_at__gte=started)  # confirmed since the walk began (a create pushed meanwhile)
        # Stripe's list leaves out customers attached to a test clock: not met is not gone.
        .exclude(Q(stripe_data__test_clock__isnull=False) & ~Q(stripe_data__test_clock=None))
        .mark_deleted()
    )
    cursors.filter(key=hold.key).update(deleted=gone, reconcile_finished_at=timezone.now())
    done = hold.read()
    figures = ReconcileStats(seen=done.seen, drifted=done.drifted, deleted=done.deleted, added=done.added)
    logger.info(
        "Reconcile of %s: %d seen, %d drifted, %d deleted, %d added.",
        _name(account),
        figures.seen,
        figures.drifted,
        figures.deleted,
        figures.added,
    )
    return figures


def _drift(objects: list[dict[str, Any]], account: Account | None, using: str) -> list[Drift]:
    """The fields of the page's mirrored customers that differ from Stripe's with no local change
    pending (the mirror's value is the one Stripe last confirmed), in one query."""
    ids = [obj["id"] for obj in objects if isinstance(obj.get("id"), str) and not obj.get("deleted")]
    by_id = {obj["id"]: obj for obj in objects if isinstance(obj.get("id"), str)}
    found: list[Drift] = []
    for customer in Customer.objects.using(using).filter(account=account, stripe_id__in=ids):
        if customer.sync_status == SyncStatus.DELETED:
            continue
        remote, base = by_id[customer.stripe_id], customer.stripe_data or {}
        try:
            desired = customer.desired_state()
        except Exception:  # noqa: BLE001 - store_page meets it too, and skips the customer with a warning
            continue
        for param in TABLE.state:
            mine, earlier, theirs = (get_path(state, param.path) for state in (desired, base, remote))
            before = norm(param, earlier)
            if norm(param, mine) != before:
                continue  # a local change not yet pushed: the merge keeps it
            if norm(param, theirs) != before:
                found.append(Drift(customer=customer, param=param.name, mirror_value=mine, stripe_value=theirs))
    return found


def reconcile_due(account: Any = None) -> bool:
    """Whether ``CUSTOMERSYNC['RECONCILE_EVERY']`` seconds have passed since the account's last
    reconcile finished (never reconciled: since its cursor was made)."""
    every = app_settings.RECONCILE_EVERY
    if not every:
        return False
    cursor = cursor_of(account)
    if _unfinished(cursor):
        return True  # a walk stopped: resume it
    last = cursor.reconcile_finished_at or cursor.created_at
    return bool(last < timezone.now() - dt.timedelta(seconds=every))


def _unfinished(cursor: EventCursor) -> bool:
    """Whether the cursor's reconcile began and has not finished (it stopped, or it is running)."""
    started, finished = cursor.reconcile_started_at, cursor.reconcile_finished_at
    return started is not None and (finished is None or finished < started)
