"""The pull writes a page in a constant number of queries, and stores every kind of customer it meets.

Query counts, never timings: a page of 10 costs what a page of 100 costs, for
new customers, for a second run that finds them unchanged, for one that finds
them changed in Stripe, and for a page mixing all three. And the walk
remembers one page of ids to stop a list that repeats itself, so a pull's
memory does not grow with the account.
"""

from __future__ import annotations

import copy
import datetime as dt

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from customersync import sync
from customersync.exceptions import APIError
from customersync.models import Conflict, Customer, SyncStatus
from customersync.pull.pages import store_page
from customersync.stripe.client import StripeClient
from tests.owners import field, make_owner, owner_model

pytestmark = pytest.mark.django_db

# On SQLite Django splits bulk_create by its 999 parameters: the count grows with the page there.
postgres_only = pytest.mark.postgresql

LOOKUP = 1  # the SELECT ... FOR UPDATE of the customers the mirror holds
# A pull's page is a transaction of its own; inside the test's, a savepoint (SAVEPOINT, RELEASE).
FRAME = 2


def seeded(stripe, size):
    stripe.reset()
    Customer.objects.all().delete()
    return stripe.seed(size)


def queries(page, **kwargs):
    with CaptureQueriesContext(connection) as ctx:
        store_page(page, sync.PullStats(), **kwargs)
    return len(ctx)


def changed(page):
    page = copy.deepcopy(page)
    for obj in page:
        obj["name"] += " II"
    return page


# -- queries per page -----------------------------------------------------------------


@postgres_only
@pytest.mark.parametrize("size", [10, 100])
def test_a_page_of_new_customers_is_one_insert(stripe, size, django_assert_num_queries):
    page = seeded(stripe, size)
    with django_assert_num_queries(LOOKUP + 1):
        store_page(page, sync.PullStats())
    assert Customer.objects.count() == size


@postgres_only
@pytest.mark.parametrize("size", [10, 100])
def test_a_second_run_over_unchanged_customers_is_one_update(stripe, size, django_assert_num_queries):
    page = seeded(stripe, size)
    store_page(page, sync.PullStats())
    with django_assert_num_queries(LOOKUP + 1):
        store_page(page, sync.PullStats())
    assert Customer.objects.count() == size


@postgres_only
@pytest.mark.parametrize("size", [10, 100])
def test_a_second_run_over_changed_customers_is_one_write(stripe, size, django_assert_num_queries):
    page = seeded(stripe, size)
    store_page(page, sync.PullStats())
    with django_assert_num_queries(LOOKUP + 1):
        store_page(changed(page), sync.PullStats())
    assert set(Customer.objects.values_list("name", flat=True)) == {obj["name"] for obj in changed(page)}


def mixed(stripe, size):
    """A page of ``size``: a third new, a third changed in Stripe, a third unchanged."""
    page = seeded(stripe, size)
    third = size // 3
    store_page(page[third:], sync.PullStats())
    return page[:third] + changed(page[third : 2 * third]) + page[2 * third :]


@postgres_only
def test_a_mixed_page_costs_the_same_for_10_and_100_customers(stripe):
    small, large = queries(mixed(stripe, 10)), queries(mixed(stripe, 100))
    assert small == large == LOOKUP + 3, (small, large)  # insert, write of the changed, touch
    assert Customer.objects.count() == 100


@postgres_only
def test_a_whole_pull_costs_the_same_per_page_for_pages_of_10_and_100(stripe):
    def walk(size, pages, *, again=False):
        seeded(stripe, size * pages)
        if again:
            sync.pull(page_size=size)
        with CaptureQueriesContext(connection) as ctx:
            stats = sync.pull(page_size=size)
        assert stats.pages == pages and stats.pulled == size * pages
        return len(ctx)

    for again in (False, True):
        one_small, three_small = walk(10, 1, again=again), walk(10, 3, again=again)
        one_large, three_large = walk(100, 1, again=again), walk(100, 3, again=again)
        assert one_small == one_large and three_small == three_large, (
            again,
            one_small,
            one_large,
            three_small,
            three_large,
        )
        # Per page: the lookup, one write (an insert, or the touch of a second walk), the cursor.
        assert (three_small - one_small) / 2 == FRAME + LOOKUP + 1 + 1, (again, one_small, three_small)


# -- what a page stores ------------------------------------------------------------------


SKIPPED = {"id", "owner_id", "updated_at", "last_pulled_at", "confirmed_at"}


def snapshot(stats):
    owners = owner_model()._base_manager.in_bulk() if settings.CUSTOMERSYNC.get("OWNER_MODEL") else {}
    mapped = (field("phone"), field("address[city]")) if owners else ()
    rows = {}
    for row in Customer.objects.values():
        owner = owners.get(row.get("owner_id"))
        rows[row["stripe_id"]] = {
            **{k: v for k, v in row.items() if k not in SKIPPED},
            "owner": None if owner is None else {f: getattr(owner, f) for f in mapped},
        }
    conflicts = sorted(
        (c.customer.stripe_id, c.param, repr(c.local_value), repr(c.remote_value), c.resolution)
        for c in Conflict.objects.select_related("customer")
    )
    return rows, conflicts, (stats.created, stats.updated, stats.kept_local, stats.conflicts, stats.unstorable)


def new_objects(stripe):
    """Customers new to the mirror: plain ones, rich ones, ones of other shapes, ones that do not fit."""
    plain = stripe.seed(4)
    rich = stripe.add_customer(
        shipping={"name": "Dock 4", "phone": None, "address": {"city": "Lyon", "country": "FR", "line1": "1 quai"}},
        invoice_settings={
            "custom_fields": [{"name": "PO", "value": "7"}],
            "footer": "Thanks",
            "rendering_options": {"amount_tax_display": "exclude_tax", "template": None},
        },
        balance=-500,
        next_invoice_sequence=7,
        preferred_locales=["fr", "en"],
        tax_exempt="exempt",
        metadata={"plan": "pro", "seats": "4"},
    )
    empty = {
        **stripe.add_customer(),
        "email": None,
        "metadata": None,
        "preferred_locales": None,
        "invoice_settings": None,
        "address": {},
        "currency": "eur",
        "delinquent": True,
    }

    def variant(**changes):
        obj = {**copy.deepcopy(plain[0]), **changes}
        obj["id"] = f"cus_variant{len(variants)}"
        variants.append(obj)

    variants: list[dict] = []
    variant(metadata={"seats": 4})  # not text: the customer owes Stripe a push
    variant(default_source={"id": "card_1", "object": "card"})  # expanded
    variant(address="10 Downing Street")
    variant(shipping={**rich["shipping"], "carrier": "UPS", "tracking_number": None})  # Stripe's own keys
    variant(preferred_locales=["en", ""])
    variant(name="x" * 300)  # does not fit
    variant(description="a\x00b")
    variant(currency="usdx")
    variant(balance=2**70)
    variant(discount={"coupon": {"percent_off": float("nan")}})
    variant(created=None, livemode="", delinquent=None)
    return [*plain, rich, empty, *variants]


def test_new_customers_are_stored_or_skipped_whatever_their_shape(stripe):
    objects = new_objects(stripe)
    stats = sync.PullStats()
    store_page(copy.deepcopy(objects), stats)
    rows, conflicts, _counts = snapshot(stats)
    assert stats.created == len(objects) - 5 and stats.skipped == 5 and not conflicts
    assert set(stats.unstorable) == {f"cus_variant{i}" for i in range(5, 10)}
    pending = {stripe_id for stripe_id, row in rows.items() if row["sync_status"] != SyncStatus.IN_SYNC}
    assert pending == {"cus_variant0", "cus_variant2", "cus_variant4"}  # owed a push: not Stripe's own shapes
    assert rows[objects[4]["id"]]["invoice_settings"]["footer"] == "Thanks"
    assert rows["cus_variant1"]["default_source"] == "card_1"
    # A page stored again in one go leaves the same rows.
    Customer.objects.all().delete()
    again = sync.PullStats()
    for obj in copy.deepcopy(objects):
        store_page([obj], again)
    assert snapshot(again) == snapshot(stats)


def second_run(stripe):
    """Customers mirrored once, some edited here since, met again: changed in Stripe or not."""
    objects = seeded(stripe, 9)
    store_page(copy.deepcopy(objects), sync.PullStats())
    by_id = {c.stripe_id: c for c in Customer.objects.all()}
    ids = [obj["id"] for obj in objects]
    Customer.objects.filter(stripe_id=ids[1]).update(name="Edited here", sync_status=SyncStatus.PENDING)
    Customer.objects.filter(stripe_id=ids[2]).update(name="Edited here", sync_status=SyncStatus.PENDING)
    Customer.objects.filter(stripe_id=ids[3]).update(
        phone="+1 edited", sync_status=SyncStatus.FAILED, sync_error={"message": "refused"}
    )
    Customer.objects.filter(stripe_id=ids[4]).update(sync_status=SyncStatus.DELETED)
    Customer.objects.filter(stripe_id=ids[5]).update(sync_status=SyncStatus.PENDING)
    if settings.CUSTOMERSYNC.get("OWNER_MODEL"):
        for index in (6, 7):  # linked; the owner of 7 is behind Stripe's phone
            owner = make_owner(f"Owner {index}", **{field("phone"): objects[index]["phone"] if index == 6 else ""})
            values = {"phone": objects[index]["phone"]} if index == 6 else {}
            Customer.objects.filter(pk=by_id[ids[index]].pk).update(owner=owner, owner_values=values)
    page = copy.deepcopy(objects)
    page[2]["name"] = "Renamed in Stripe"  # a conflict with the edit here
    page[8]["email"] = "new@example.com"
    return page


def test_a_second_run_keeps_edits_records_conflicts_and_revives(stripe):
    page = second_run(stripe)
    before = {c.stripe_id: c.updated_at for c in Customer.objects.all()}
    stats = sync.PullStats()
    store_page(copy.deepcopy(page), stats)
    rows, conflicts, _counts = snapshot(stats)
    assert rows[page[1]["id"]]["name"] == "Edited here"  # kept
    assert rows[page[2]["id"]]["name"] == "Edited here"  # kept, and a conflict recorded
    assert [c[:2] for c in conflicts] == [(page[2]["id"], "name")]
    assert rows[page[3]["id"]]["sync_status"] == SyncStatus.FAILED  # the refused edit is still unsent
    assert rows[page[4]["id"]]["sync_status"] == SyncStatus.IN_SYNC  # revived
    assert rows[page[5]["id"]]["sync_status"] == SyncStatus.IN_SYNC  # nothing to send after all
    assert rows[page[8]["id"]]["email"] == "new@example.com"
    assert stats.updated == 9 and stats.kept_local == 3 and stats.conflicts == 1
    after = {c.stripe_id: c.updated_at for c in Customer.objects.all()}
    untouched = {stripe_id for stripe_id in before if after[stripe_id] == before[stripe_id]}
    linked = settings.CUSTOMERSYNC.get("OWNER_MODEL")
    # Left as they were by the merge (edits kept, still owed): only the pull's timestamps move. A linked
    # customer whose owner gets Stripe's both-ways values back records them, so its row is written.
    assert untouched == {page[i]["id"] for i in ((0, 1, 3) if linked else (0, 1, 3, 6, 7))}
    if linked:
        assert rows[page[7]["id"]]["owner"][field("phone")] == page[7]["phone"]


def test_an_unchanged_customer_gets_only_the_pulls_timestamps(stripe):
    (obj,) = stripe.seed(1)
    store_page([obj], sync.PullStats())
    before = Customer.objects.get()
    later = before.confirmed_at + dt.timedelta(minutes=5)
    store_page([copy.deepcopy(obj)], sync.PullStats(), at=later)
    after = Customer.objects.get()
    assert after.confirmed_at == later and after.last_pulled_at > before.last_pulled_at
    assert after.updated_at == before.updated_at and after.stripe_data == before.stripe_data


# -- the walk holds a page of ids, not every id it listed --------------------------------


class Scripted(StripeClient):
    """A client whose list answers come from ``pages``: cursor -> ids (no HTTP)."""

    def __init__(self, pages):
        super().__init__("sk_test_scripted", api_base="http://127.0.0.1:9")
        self.pages, self.calls = pages, 0

    def list_customers(self, *, limit=100, starting_after=None, created=None):
        self.calls += 1
        return {"data": [{"id": i} for i in self.pages(starting_after)], "has_more": True}


def test_a_list_that_cycles_over_several_pages_is_stopped():
    cycle = {None: ["a1", "a2"], "a2": ["b1", "b2"], "b2": ["c1", "c2"], "c2": ["a1", "a2"]}
    client = Scripted(cycle.__getitem__)
    with pytest.raises(APIError, match="repeated itself"):
        for _page in client.iter_customers(limit=2):
            pass
    assert client.calls <= 2 * len(cycle)


def test_a_long_walk_is_not_mistaken_for_a_cycle():
    def pages(cursor):
        n = 0 if cursor is None else int(cursor) + 1
        return [str(n)] if n < 5000 else []

    assert sum(len(page) for page in Scripted(pages).iter_customers(limit=1)) == 5000
