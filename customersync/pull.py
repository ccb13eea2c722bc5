"""The pull: import or refresh the mirror from Stripe, a page at a time.

Each page is written in a constant number of queries (``store_page``), which
the webhook events reuse for one customer. Stripe's object is merged into the
mirror three ways (``merge.merge``): a field edited here and not yet pushed
is kept, and a conflict is recorded when Stripe changed it too. Plain
customers new to the mirror, and customers Stripe has as the mirror last
stored them, get the same answers without the merge (``pull_rows``), and on
PostgreSQL each kind of write is one statement a page. The next page is
fetched, in a thread, while the database stores the one before (``_read_ahead``).

A customer holding a value its columns cannot (``values.column_errors``: a
name longer than the column, a NUL character) is skipped, with a warning
naming its id and fields, and counted in ``PullStats.skipped``: the rest of
its page is stored, and the mirror keeps that customer as it was. Storing it
cut down would be worse: the next save would push the cut value to Stripe.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from . import accounts, owners, signals
from .accounts import stripe_client
from .client import StripeClient
from .conf import app_settings
from .exceptions import Unstorable
from .models import Account, Conflict, Customer, PullCursor, Resolution, SyncStatus
from .pull_rows import PageWriter
from .ratelimit import LocalBudget
from .values import column_errors

logger = logging.getLogger("customersync")


@dataclass
class PullStats:
    created: int = 0
    updated: int = 0
    kept_local: int = 0
    conflicts: int = 0
    deleted: int = 0
    pages: int = 0
    # Customers not stored because a value does not fit its column: Stripe id -> errors by field.
    unstorable: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return len(self.unstorable)

    @property
    def pulled(self) -> int:
        return self.created + self.updated


def pull(
    *,
    client: StripeClient | None = None,
    page_size: int | None = None,
    progress: Callable[[PullStats], None] | None = None,
    since: dt.datetime | None = None,
    limit: int | None = None,
    resume: bool = False,
    cursor: str | None = None,
    account: Any = None,
) -> PullStats:
    """Import or refresh customers of ``account`` (an ``Account``, ``"platform[/acct_...]"``;
    None: the default platform's own), page by page, resumably.

    A walk of the whole account (no ``since``, no ``limit``) also marks local
    customers of that account it did not meet as deleted in Stripe.
    """
    account = accounts.resolve(account)
    client = client or stripe_client(account)
    if cursor is None:
        cursor = "customersync_pull" if account is None else f"customersync_pull:{account.pk}"
    stats = PullStats()
    state = PullCursor.objects.filter(name=cursor).first() if resume else None
    if state is None:
        state = PullCursor(name=cursor, started_at=timezone.now(), complete_walk=since is None and limit is None)
        state.save()
    # A pull is sequential: this process's own pacer keeps it within PULL_RATE.
    pacer = LocalBudget(app_settings.PULL_RATE) if app_settings.PULL_RATE else None
    pages = client.iter_customers(
        limit=page_size or app_settings.PAGE_SIZE,
        starting_after=state.starting_after or None,
        created={"gte": int(since.timestamp())} if since else None,
        max_items=limit,
        before_page=pacer.acquire if pacer else None,
    )
    expect_new = True  # an import, until a page finds customers the mirror holds
    for data in _read_ahead(pages):
        created = stats.created
        with transaction.atomic():  # a page and the cursor past it commit together
            store_page(data, stats, account=account, expect_new=expect_new)
            PullCursor.objects.filter(name=cursor).update(starting_after=data[-1]["id"], pulled=F("pulled") + len(data))
        expect_new = stats.created - created == len(data)
        stats.pages += 1
        if progress:
            progress(stats)
    if state.complete_walk and limit is None:
        # Not met in a whole walk: gone from Stripe. Customers confirmed after
        # the walk began (a create pushed meanwhile) may not be listed yet.
        stats.deleted = (
            Customer.objects.filter(account=account)
            .exclude(stripe_id=None)
            .exclude(sync_status=SyncStatus.DELETED)
            .filter(Q(last_pulled_at__lt=state.started_at) | Q(last_pulled_at=None))
            .exclude(confirmed_at__gte=state.started_at)
            .mark_deleted()
        )
    PullCursor.objects.filter(name=cursor).delete()
    return stats


def _read_ahead(pages: Iterator[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """``pages``, walked in a thread of its own while this one writes: the next page travels while
    the database stores the one before. The walk keeps at most two pages ahead (memory stays flat)
    and uses the client alone until it ends; its error is raised here, after the pages before it.
    Leaving early (a page failed to store) stops the walk, at most one request later."""
    handoff: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(item: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def walk() -> None:
        try:
            for page in pages:
                if not offer((True, page)):
                    return
        except BaseException as error:  # raised in the caller's thread, at its turn
            offer((False, error))
        else:
            offer((False, None))
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    walker = threading.Thread(target=walk, name="customersync pull walk", daemon=True)
    walker.start()
    try:
        while True:
            more, item = handoff.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        walker.join()


def pull_one(stripe_id: str, *, client: StripeClient | None = None, account: Any = None) -> Customer:
    """Refresh one customer of ``account`` (default: the default platform's own) from Stripe."""
    account = accounts.resolve(account)
    client = client or stripe_client(account)
    stats = PullStats()
    store_page([client.retrieve_customer(stripe_id)], stats, account=account)
    if stripe_id in stats.unstorable:
        raise Unstorable(stripe_id, stats.unstorable[stripe_id])
    return Customer.objects.get(account=account, stripe_id=stripe_id)


def store_page(
    objects: Iterable[dict[str, Any]],
    stats: PullStats,
    *,
    at: dt.datetime | None = None,
    source: str = "pull",
    account: Account | None = None,
    expect_new: bool = False,
) -> None:
    """Write customers of ``account`` from Stripe in a constant number of queries, keeping local edits.

    Plain customers new to the mirror, and ones Stripe has as the mirror last
    saw them, take the fast lane (``pull_rows``); the rest are merged here.
    ``expect_new``: most are likely new (an import), so on PostgreSQL the
    plain ones are created first and only the others looked up and locked.
    """
    now = timezone.now()
    objects = list(objects)
    remote_wins = app_settings.CONFLICT_POLICY == "remote_wins"
    resolution = Resolution.REMOTE_WINS if remote_wins else Resolution.LOCAL_WINS
    # No savepoint: a caller's transaction fails as a whole, and a page costs no more round trips.
    with transaction.atomic(savepoint=False):
        rows = PageWriter(account, now, at or now)
        created = rows.insert_new(objects) if expect_new else set()
        objects = [obj for obj in objects if obj["id"] not in created]
        existing = {
            c.stripe_id: c
            for c in Customer.objects.select_for_update().filter(
                account=account, stripe_id__in=[o["id"] for o in objects]
            )
        } if objects else {}  # fmt: skip
        fast: list[tuple[dict[str, Any], str]] = []
        new: list[Customer] = []
        merged: list[Customer] = []  # existing customers, in the page's order
        same: set[int] = set()  # of those, the ones Stripe has as the mirror last saw them
        conflicts: list[Conflict] = []
        gone: list[int] = []
        met: list[int] = []
        for obj in objects:
            customer = existing.get(obj["id"])
            if obj.get("deleted"):
                if customer is not None:
                    gone.append(customer.pk)
                continue
            if customer is None and (row := rows.new_row(obj)) is not None:
                fast.append(row)
                continue
            if customer is not None and rows.unchanged(customer, obj):
                customer.last_pulled_at, customer.confirmed_at = now, at or now
                merged.append(customer)
                same.add(customer.pk)
                continue
            fresh = customer is None
            customer = customer or Customer(account=account)
            merge = customer.merge_remote(obj, base=customer.stripe_data, remote_wins=remote_wins, at=at or now)
            customer.last_pulled_at = now
            problems = column_errors(customer)
            if problems:
                _skip(obj["id"], problems, source, stats)
                if not fresh:
                    met.append(customer.pk)  # still in Stripe: a whole walk must not mark it deleted
                continue
            (new if fresh else merged).append(customer)
            stats.kept_local += bool(merge.kept)
            conflicts += [
                Conflict(customer=customer, param=param, local_value=mine, remote_value=theirs, source=source,
                         resolution=resolution)
                for param, mine, theirs in merge.conflicts
            ]  # fmt: skip
            if customer.pk:
                customer.revive()  # it exists after all
            customer.settle(customer.needs_push(), keep_failure=True)
        # Both-ways values go to the site's owners; an unchanged customer whose owner
        # was behind gets its owner_values recorded, so its row is written too.
        recorded = {c.pk: c.owner_values for c in merged if c.pk in same}
        owners.write_back(merged)
        same = {c.pk for c in merged if c.pk in same and c.owner_values is recorded[c.pk]}
        rows.insert(fast, new)
        rows.update([c for c in merged if c.pk not in same])
        rows.touch(list(same))
        if conflicts:
            Conflict.objects.bulk_create(conflicts)
            signals.conflict_recorded.send(sender=Customer, conflicts=conflicts)
        if gone:
            Customer.objects.filter(pk__in=gone).mark_deleted(last_pulled_at=now)
        if met:
            Customer.objects.filter(pk__in=met).update(last_pulled_at=now)
    stats.created += len(created) + len(fast) + len(new)
    stats.updated += len(merged) + len(gone)
    stats.conflicts += len(conflicts)


def _skip(stripe_id: str, problems: dict[str, list[str]], source: str, stats: PullStats) -> None:
    """Leave out a customer the mirror cannot hold, saying which fields and why (never their values)."""
    stats.unstorable[stripe_id] = problems
    logger.warning(
        "Skipped Stripe customer %s from a %s: a value does not fit the mirror (%s)",
        stripe_id,
        source,
        "; ".join(f"{name}: {' '.join(messages)}" for name, messages in problems.items()),
    )
