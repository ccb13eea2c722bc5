"""The pull: import or refresh the mirror from Stripe, a page at a time.

Each page is written in a constant number of queries (``store_page``), which
the webhook events reuse for one customer. Stripe's object is merged into the
mirror three ways (``merge.merge``): a field edited here and not yet pushed
is kept, and a conflict is recorded when Stripe changed it too. A page is
written through the ORM, the same statements on every database: one read,
``bulk_create`` for new customers, an upsert on the primary key for changed
ones, one UPDATE of the timestamps for those the merge left as they were. The
next page is fetched, in a thread, while the database stores the one before
(``read_ahead``).

A customer Stripe's answer got wrong is skipped, with a warning naming its id
(or its place on the page, when it has no usable id) and fields, and counted
in ``PullStats.skipped``: one whose object the mirror cannot take
(``models.remote``: an id that is no customer id, a ``created`` that is no
whole number of seconds, a ``delinquent`` that is no boolean), one whose merge raised
anything at all, or one holding a value its columns cannot
(``columns.column_errors``: a name longer than the column, text the one text
rule refuses). The rest of its page is stored, and the mirror keeps that
customer as it was. Storing it cut down would be worse: the next save would
push the cut value to Stripe.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import router, transaction
from django.db.models import F, Q
from django.utils import timezone

from .. import accounts, signals
from ..accounts import stripe_client
from ..conf import app_settings
from ..exceptions import APIError, Unstorable
from ..models import Account, Conflict, Customer, PullCursor, Resolution, SyncStatus
from ..models.columns import column_errors
from ..models.remote import customer_id_ok, customer_problems
from ..owner import mapping
from ..stripe.client import StripeClient
from ..stripe.rate_budget import LocalBudget

logger = logging.getLogger("customersync")


@dataclass
class PullStats:
    """What a pull did, counted in customers: ``created`` (new here), ``updated`` (refreshed,
    or gone from Stripe as an event or page said), ``kept_local`` (with a local edit kept over
    Stripe's value), ``conflicts`` (recorded), ``deleted`` (not met by a whole walk: marked
    deleted in Stripe), ``pages`` (read), ``unstorable`` (skipped: Stripe id to the errors of
    each field); ``pulled`` is ``created + updated`` and ``skipped`` the number unstorable."""

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
    using = router.db_for_write(Customer)
    cursors = PullCursor.objects.using(using)  # a page and the cursor past it commit together
    state = cursors.filter(name=cursor).first() if resume else None
    if state is None:
        cursors.filter(name=cursor).delete()  # a new walk: an interrupted one's place is dropped
        state = cursors.create(name=cursor, started_at=timezone.now(), complete_walk=since is None and limit is None)
    # A pull is sequential: this process's own pacer keeps it within PULL_RATE.
    pacer = LocalBudget(app_settings.PULL_RATE) if app_settings.PULL_RATE else None
    pages = client.iter_customers(
        limit=page_size or app_settings.PAGE_SIZE,
        starting_after=state.starting_after or None,
        created={"gte": int(since.timestamp())} if since else None,
        max_items=limit,
        before_page=pacer.acquire if pacer else None,
    )
    for data in read_ahead(pages):
        with transaction.atomic(using=using):
            store_page(data, stats, account=account)
            cursors.filter(name=cursor).update(starting_after=data[-1]["id"], pulled=F("pulled") + len(data))
        stats.pages += 1
        if progress:
            progress(stats)
    if state.complete_walk and limit is None:
        # Not met in a whole walk: gone from Stripe. Customers confirmed after
        # the walk began (a create pushed meanwhile) may not be listed yet.
        stats.deleted = (
            Customer.objects.using(using)
            .filter(account=account)
            .exclude(stripe_id=None)
            .exclude(sync_status=SyncStatus.DELETED)
            .filter(Q(last_pulled_at__lt=state.started_at) | Q(last_pulled_at=None))
            .exclude(confirmed_at__gte=state.started_at)
            .mark_deleted()
        )
    cursors.filter(name=cursor).delete()
    return stats


def read_ahead(pages: Iterator[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
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
    """Refresh one customer of ``account`` (default: the default platform's own) from Stripe.

    Raises only the app's errors: ``StripeError`` when Stripe could not be asked or its answer
    is not this customer (another customer's id, none, or an answer that could not be read:
    refused and logged, nothing stored), ``Unstorable`` when the customer does not fit the
    mirror, ``ConfigurationError`` when its account cannot make a client.
    """
    account = accounts.resolve(account)
    client = client or stripe_client(account)
    stats = PullStats()
    obj = client.retrieve_customer(stripe_id)  # the client raises only StripeError, whatever the answer
    answered = obj.get("id")
    if answered != stripe_id:
        # Never stored under the customer asked for, nor over the one it names.
        said = answered if isinstance(answered, str) and customer_id_ok(answered) else "none usable"
        logger.warning("Refused Stripe's answer to a refresh of %s: it is customer %s", stripe_id, said)
        raise APIError(
            f"Stripe answered the refresh of {stripe_id} with another customer's id ({said}): refused, nothing stored.",
            http_status=200,
            request_id=getattr(obj, "request_id", None),
            should_retry=False,
        )
    store_page([obj], stats, account=account)
    if stripe_id in stats.unstorable:
        raise Unstorable(stripe_id, stats.unstorable[stripe_id])
    found = Customer.objects.using(router.db_for_write(Customer)).filter(account=account, stripe_id=stripe_id).first()
    if found is None:  # Stripe says it was deleted, and it was never mirrored here
        raise Unstorable(stripe_id, {"deleted": ["Stripe says this customer was deleted; there is nothing to store."]})
    return found


def store_page(
    objects: Iterable[dict[str, Any]],
    stats: PullStats,
    *,
    at: dt.datetime | None = None,
    source: str = "pull",
    account: Account | None = None,
) -> None:
    """Write customers of ``account`` from Stripe in a constant number of queries, keeping local edits.

    One read locks the page's customers the mirror holds; each customer is
    merged (``Customer.merge_remote``); then one statement of each kind writes
    the page: new customers created, changed ones written whole (an upsert on
    the primary key, so one statement whatever the rows hold), and those the
    merge left as they were get only the pull's timestamps.
    """
    now = timezone.now()
    confirmed = at or now
    objects = list(objects)
    remote_wins = app_settings.CONFLICT_POLICY == "remote_wins"
    resolution = Resolution.REMOTE_WINS if remote_wins else Resolution.LOCAL_WINS
    using = router.db_for_write(Customer)
    customers = Customer.objects.using(using)
    columns = [f for f in Customer._meta.concrete_fields if not f.primary_key]
    written = [f.name for f in columns]
    compared = [f for f in columns if f.name not in _STAMPS]  # what a merge can change
    names = [f.attname for f in compared]
    # No savepoint: a caller's transaction fails as a whole, and a page costs no more round trips.
    with transaction.atomic(using=using, savepoint=False):
        ids = [obj["id"] for obj in objects if _usable_id(obj)]  # a junk id is never sent to the database
        locked = customers.select_for_update().filter(account=account, stripe_id__in=ids) if ids else ()
        existing = {c.stripe_id: c for c in locked}
        new: list[Customer] = []
        merged: list[tuple[Customer, tuple[Any, ...]]] = []  # existing customers, and their rows as read
        conflicts: list[Conflict] = []
        gone: list[int] = []
        met: list[int] = []
        for index, obj in enumerate(objects):
            usable = _usable_id(obj)
            customer = existing.get(obj["id"]) if usable else None
            if usable and obj.get("deleted"):
                if customer is not None:
                    gone.append(customer.pk)
                continue
            fresh = customer is None
            read = () if fresh else _row(customer, names)
            # One customer Stripe's answer got wrong is skipped, never its page: its shape first,
            # then anything its merge raises, then its columns (only what the merge changed).
            problems = _shape_errors(obj)
            if not problems:
                customer = customer or Customer(account=account)
                base = customer.stripe_data
                try:
                    merge = customer.merge_remote(obj, base=base, remote_wins=remote_wins, at=confirmed)
                except Exception as err:  # any value no check foresaw: this customer only
                    problems = {"stripe_data": [f"Could not be read ({type(err).__name__})."]}
                else:
                    customer.last_pulled_at = now
                    problems = column_errors(customer, None if fresh else _moved(customer, compared, read))
            if problems:
                _skip(obj["id"] if usable else f"#{index + 1}", problems, source, stats)
                if not fresh:
                    met.append(customer.pk)  # still in Stripe: a whole walk must not mark it deleted
                continue
            if fresh:
                new.append(customer)
            else:
                customer.revive()  # it exists after all
                merged.append((customer, read))
            stats.kept_local += bool(merge.kept)
            conflicts += [
                Conflict(
                    customer=customer,
                    param=param,
                    local_value=mine,
                    remote_value=theirs,
                    source=source,
                    resolution=resolution,
                )
                for param, mine, theirs in merge.conflicts
            ]
            customer.settle(customer.needs_push(desired=merge.state), keep_failure=True)  # the merged state
        # Both-ways values go to the site's owners (their owner_values record it, so the row is written).
        mapping.write_back([customer for customer, _read in merged], source=source)
        changed: list[Customer] = []
        same: list[int] = []
        for customer, read in merged:
            if _row(customer, names) == read:
                same.append(customer.pk)
            else:
                changed.append(customer)
        if new:
            customers.bulk_create(new)
        if changed:
            customers.bulk_create(changed, update_conflicts=True, unique_fields=["pk"], update_fields=written)
        if same:
            customers.filter(pk__in=same).update(last_pulled_at=now, confirmed_at=confirmed)
        if conflicts:
            Conflict.objects.using(using).bulk_create(conflicts)
            signals.conflict_recorded.send(sender=Customer, conflicts=conflicts)
        if gone:
            customers.filter(pk__in=gone).mark_deleted(last_pulled_at=now)
        if met:
            customers.filter(pk__in=met).update(last_pulled_at=now)
    stats.created += len(new)
    stats.updated += len(merged) + len(gone)
    stats.conflicts += len(conflicts)


# The pull's own timestamps, and Django's: what moves on a customer met unchanged.
_STAMPS = frozenset({"last_pulled_at", "confirmed_at", "updated_at"})


def _row(customer: Customer, names: list[str]) -> tuple[Any, ...]:
    return tuple(getattr(customer, name) for name in names)


def _moved(customer: Customer, fields: list[Any], read: tuple[Any, ...]) -> list[str]:
    """The names of ``fields`` whose value on ``customer`` is not the one ``read``."""
    return [f.name for f, was in zip(fields, read, strict=True) if getattr(customer, f.attname) != was]


def _usable_id(obj: Any) -> bool:
    return isinstance(obj, dict) and customer_id_ok(obj.get("id"))


def _shape_errors(obj: Any) -> dict[str, list[str]]:
    """What Stripe's customer object holds that the mirror cannot take, by field (``models.remote``)."""
    found = customer_problems(obj, lengths=False, fields=_CONVERTED)
    return {name: [f"Must be {expected}."] for name, expected in found}


# The values Stripe owns that the merge converts (a time, a nullable boolean): judged before it.
_CONVERTED = ("created", "delinquent")


def _skip(stripe_id: str, problems: dict[str, list[str]], source: str, stats: PullStats) -> None:
    """Leave out a customer the mirror cannot hold, saying which fields and why (never their values).
    ``stripe_id``: its id, or ``#n`` (its place on the page) when it has no usable one."""
    stats.unstorable[stripe_id] = problems
    logger.warning(
        "Skipped Stripe customer %s from a %s: a value does not fit the mirror (%s)",
        stripe_id,
        source,
        "; ".join(f"{name}: {' '.join(messages)}" for name, messages in problems.items()),
    )
