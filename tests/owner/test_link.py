"""``manage.py customersync_link``: owners linked to customers already mirrored, matched, never guessed.

Written against whichever owner model the settings name (``CUSTOMERSYNC_TEST_OWNER``),
through the helpers of ``tests/owners.py``.
"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from customersync import sync
from customersync.core.encoding import decode
from customersync.models import Customer, PendingPush, SyncStatus
from customersync.owner import linking
from customersync.owner.mapping import mapping
from tests.owners import field, identity, make_owner, owner_metadata_key

pytestmark = pytest.mark.django_db

COLUMN = "stripe_customer_id"


def run(*args, **options) -> str:
    out = StringIO()
    call_command("customersync_link", *args, stdout=out, **options)
    return out.getvalue()


def mirrored(stripe, **fields) -> Customer:
    """A customer in Stripe, imported here as customersync_pull would."""
    return sync.pull_one(stripe.add_customer(**fields)["id"])


def listed(owner, what: str) -> str:
    return f"owner {owner.pk} {str(owner)!r}: {what}"


def summary(linked=0, already=0, ambiguous=0, taken=0, no_match=0, dry_run=False) -> str:
    line = (
        f"Linked {linked}, already linked {already}, ambiguous {ambiguous}, "
        f"customer linked to another owner {taken}, no match {no_match}"
    )
    return line + (" (dry run: nothing written)." if dry_run else ".")


def owner_of(customer: Customer):
    return Customer.objects.get(pk=customer.pk).owner_id


def assert_nothing_pushed(stripe) -> None:
    assert stripe.requests == []
    assert not PendingPush.objects.exists()
    assert not Customer.objects.exclude(sync_status=SyncStatus.IN_SYNC).exists()


def site_metadata_key() -> str:
    return owner_metadata_key()[len("metadata[") : -1]


# -- matching --------------------------------------------------------------------------


def test_by_column_links_the_customer_the_owner_names(stripe):
    x = mirrored(stripe, email="x@acme.test")
    y = mirrored(stripe, email="y@acme.test")
    a = make_owner("Acme", **{COLUMN: x.stripe_id})
    b = make_owner("Beta", **{COLUMN: f"  {y.stripe_id} "})
    empty = make_owner("Empty")
    gone = make_owner("Gone", **{COLUMN: "cus_not_mirrored"})
    stripe.clear_requests()

    out = run("--field", COLUMN, verbosity=2)

    assert owner_of(x) == a.pk and owner_of(y) == b.pk
    assert listed(a, f"linked to {x.stripe_id} ({COLUMN} {x.stripe_id!r})") in out
    assert Customer.objects.get(pk=x.pk).owner_values == mapping().values(a)
    assert listed(empty, f"no match: no {COLUMN}") in out
    assert listed(gone, f"no match: no customer with {COLUMN} 'cus_not_mirrored'") in out
    assert out.strip().endswith(summary(linked=2, no_match=2))
    assert_nothing_pushed(stripe)


def test_after_the_link_an_owner_save_sends_only_what_changed_since(stripe):
    # The customer's name and description differ from the owner's: linking adopts
    # the owner's values as applied, so they are not pushed by an unrelated edit.
    x = mirrored(stripe, name="Acme Incorporated", email="billing@acme.test", description="old")
    owner = make_owner("Acme", **{field("email"): "billing@acme.test", COLUMN: x.stripe_id})
    stripe.clear_requests()
    run("--field", COLUMN)
    assert_nothing_pushed(stripe)

    setattr(owner, field("phone"), "+33 1 23 45 67 89")
    owner.save()
    sync.push(x.pk)

    (update,) = [r for r in stripe.requests if r.method == "POST"]
    assert update.path == f"/v1/customers/{x.stripe_id}"
    assert decode(update.body) == {"phone": "+33 1 23 45 67 89"}
    assert stripe.get_customer(x.stripe_id)["name"] == "Acme Incorporated"


def test_a_customer_deleted_in_stripe_is_no_candidate(stripe):
    x = mirrored(stripe)
    Customer.objects.filter(pk=x.pk).mark_deleted()
    owner = make_owner(**{COLUMN: x.stripe_id})
    out = run("--field", COLUMN)
    assert owner_of(x) is None
    assert listed(owner, "no match") in out


@pytest.mark.parametrize("batch_size", [1, 500])
def test_by_email_lists_ambiguous_matches_and_owners_without_one(stripe, batch_size):
    x = mirrored(stripe, email="billing@acme.TEST")
    y1 = mirrored(stripe, email="dup@beta.test")
    y2 = mirrored(stripe, email="DUP@beta.test")
    z = mirrored(stripe, email="shared@gamma.test")
    a = make_owner("Acme", **{field("email"): "Billing@Acme.test"})
    b = make_owner("Beta", **{field("email"): "dup@beta.test"})
    c = make_owner("Nobody", **{field("email"): "nobody@nowhere.test"})
    # Two owners with one customer's email, in different batches at batch size 1:
    # neither is linked, the first is not preferred.
    d1 = make_owner("Gamma", **{field("email"): "shared@gamma.test"})
    d2 = make_owner("Gamma bis", **{field("email"): "shared@gamma.test"})
    stripe.clear_requests()

    out = run("--email", "--batch-size", str(batch_size))

    assert owner_of(x) == a.pk
    assert owner_of(y1) is None and owner_of(y2) is None and owner_of(z) is None
    assert listed(b, "ambiguous: email 'dup@beta.test' matches 2 customers: ") in out
    assert y1.stripe_id in out and y2.stripe_id in out
    assert listed(c, "no match: no customer with email 'nobody@nowhere.test'") in out
    for owner in (d1, d2):
        assert listed(owner, f"ambiguous: {z.stripe_id} (email 'shared@gamma.test') matches 2 owners") in out
    assert out.strip().endswith(summary(linked=1, ambiguous=3, no_match=1))
    assert_nothing_pushed(stripe)


def test_an_owner_with_a_linked_owners_email_is_not_ambiguous(stripe):
    # The linked owner has its customer: it competes for no other.
    x = mirrored(stripe, email="one@acme.test")
    other = mirrored(stripe, email="other@acme.test")
    linked_owner = make_owner("Linked", **{field("email"): "one@acme.test"})
    Customer.objects.filter(pk=other.pk).update(owner=linked_owner)
    owner = make_owner("Acme", **{field("email"): "one@acme.test"})
    out = run("--email")
    assert owner_of(x) == owner.pk
    assert out.strip().endswith(summary(linked=1, already=1))


def test_by_email_from_a_callable_mapping(stripe, settings):
    # The email is no column here: shared emails are counted from the owners themselves.
    column = field("email")
    fields = {**settings.CUSTOMERSYNC["OWNER_FIELDS"], "email": lambda owner: getattr(owner, column).upper()}
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "OWNER_FIELDS": fields}
    x = mirrored(stripe, email="x@acme.test")
    z = mirrored(stripe, email="shared@acme.test")
    a = make_owner("Acme", **{column: "x@acme.test"})
    for name in ("One", "Two"):
        make_owner(name, **{column: "shared@acme.test"})
    stripe.clear_requests()
    out = run("--email", "--batch-size", "1")
    assert owner_of(x) == a.pk and owner_of(z) is None
    assert Customer.objects.get(pk=x.pk).owner_values["email"] == "X@ACME.TEST"
    assert out.strip().endswith(summary(linked=1, ambiguous=2))
    assert_nothing_pushed(stripe)


def test_email_not_mapped_is_an_error(settings):
    fields = {k: v for k, v in settings.CUSTOMERSYNC["OWNER_FIELDS"].items() if k != "email"}
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "OWNER_FIELDS": fields}
    with pytest.raises(CommandError, match=r"--email: CUSTOMERSYNC\['OWNER_FIELDS'\] maps no 'email'"):
        run("--email")


@pytest.mark.parametrize("key", ["site", "customersync_owner"])
def test_by_metadata(stripe, key):
    name = site_metadata_key() if key == "site" else "customersync_owner"

    def value(owner):
        return str(owner.pk) if key == "site" else identity(owner)

    a = make_owner("Acme")
    b = make_owner("Beta")
    c = make_owner("Nobody")
    x = mirrored(stripe, metadata={name: value(a)})
    y1 = mirrored(stripe, metadata={name: value(b)})
    y2 = mirrored(stripe, metadata={name: value(b)})
    decoy = mirrored(stripe, metadata={"another_key": value(c)})
    stripe.clear_requests()

    out = run("--metadata", name)

    assert owner_of(x) == a.pk
    assert owner_of(y1) is None and owner_of(y2) is None and owner_of(decoy) is None
    assert listed(b, f"ambiguous: metadata[{name!r}] {value(b)!r} matches 2 customers") in out
    assert listed(c, f"no match: no customer with metadata[{name!r}] {value(c)!r}") in out
    assert out.strip().endswith(summary(linked=1, ambiguous=1, no_match=1))
    assert_nothing_pushed(stripe)


def test_only_the_owners_named(stripe):
    x = mirrored(stripe)
    y = mirrored(stripe)
    a = make_owner(**{COLUMN: x.stripe_id})
    make_owner(**{COLUMN: y.stripe_id})
    out = run(str(a.pk), "--field", COLUMN)
    assert owner_of(x) == a.pk and owner_of(y) is None
    assert out.strip().endswith(summary(linked=1))


# -- what is left alone ------------------------------------------------------------------


def test_dry_run_writes_nothing_and_says_so(stripe):
    x = mirrored(stripe, email="x@acme.test")
    mirrored(stripe, email="dup@acme.test")
    mirrored(stripe, email="dup@acme.test")
    acme = make_owner("Acme", **{field("email"): "x@acme.test"})
    dup = make_owner("Dup", **{field("email"): "dup@acme.test"})
    stripe.clear_requests()

    with CaptureQueriesContext(connection) as queries:
        out = run("--email", "--dry-run", verbosity=2)

    writes = [q["sql"] for q in queries if q["sql"].split()[0].upper() in ("UPDATE", "INSERT", "DELETE")]
    assert writes == []
    assert not Customer.objects.filter(owner__isnull=False).exists()
    assert Customer.objects.get(pk=x.pk).owner_values == {}
    assert listed(acme, f"would be linked to {x.stripe_id} (email 'x@acme.test')") in out
    assert listed(dup, "ambiguous") in out
    assert out.strip().endswith(summary(linked=1, ambiguous=1, dry_run=True))
    assert_nothing_pushed(stripe)


def test_owners_already_linked_are_skipped_and_counted(stripe):
    x = mirrored(stripe)
    y = mirrored(stripe)
    owner = make_owner(**{COLUMN: x.stripe_id})
    assert run("--field", COLUMN).strip().endswith(summary(linked=1))
    # Linked already (here to x); its column now names y: the link stays.
    type(owner).objects.filter(pk=owner.pk).update(**{COLUMN: y.stripe_id})
    stripe.clear_requests()

    out = run("--field", COLUMN)

    assert out.strip() == summary(already=1)  # counted, not listed
    assert owner_of(x) == owner.pk and owner_of(y) is None
    assert_nothing_pushed(stripe)


def test_a_customer_linked_to_another_owner_is_not_relinked(stripe):
    x = mirrored(stripe, email="x@acme.test")
    first = make_owner("First")
    Customer.objects.filter(pk=x.pk).update(owner=first)
    second = make_owner("Second", **{COLUMN: x.stripe_id, field("email"): "x@acme.test"})
    stripe.clear_requests()

    for mode in (["--field", COLUMN], ["--email"]):
        out = run(*mode)
        assert owner_of(x) == first.pk
        assert listed(second, f"customer linked to another owner: {x.stripe_id}") in out
        assert f"is linked to owner {first.pk}, not relinked" in out
        assert out.strip().endswith(summary(already=1, taken=1))
    assert_nothing_pushed(stripe)


def test_an_owner_that_got_a_customer_meanwhile_is_not_linked_twice(stripe, monkeypatch):
    x = mirrored(stripe)
    owner = make_owner(**{COLUMN: x.stripe_id})
    real = linking._link_batch
    calls = []

    def race(*args, **kwargs):
        if not calls:
            # Another process creates the owner's customer after this batch was read.
            Customer.objects.bulk_create([Customer(owner=owner, stripe_id="cus_created_meanwhile")])
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(linking, "_link_batch", race)
    out = run("--field", COLUMN)
    assert len(calls) == 2
    assert owner_of(x) is None
    assert Customer.objects.get(owner=owner).stripe_id == "cus_created_meanwhile"
    assert out.strip().endswith(summary(already=1))


# -- cost ------------------------------------------------------------------------------

# Per batch of owners: the owners, the candidate customers (locked), one UPDATE,
# a savepoint and its release; counting the keys owners share reads them once more.
PER_BATCH = 6
# Reading past a full last batch finds nothing: once to count keys, once to link.
PAST_THE_END = 2


def _linkable(stripe, n):
    owners = [make_owner(f"Owner {i}", **{field("email"): f"owner{i}@example.test"}) for i in range(n)]
    for i in range(n):
        stripe.add_customer(email=f"OWNER{i}@example.test")
    sync.pull()
    stripe.clear_requests()
    return owners


@pytest.mark.parametrize("n", [3, 40])
def test_one_batch_costs_the_same_queries_for_few_owners_or_many(stripe, n, django_assert_max_num_queries):
    _linkable(stripe, n)
    with django_assert_max_num_queries(PER_BATCH):
        out = run("--email", "-v", "0")
    assert out.strip() == summary(linked=n)
    assert Customer.objects.filter(owner__isnull=False).count() == n
    assert_nothing_pushed(stripe)


def test_queries_grow_with_batches_not_owners(stripe, django_assert_max_num_queries):
    _linkable(stripe, 40)
    batches = 4  # of 10
    with django_assert_max_num_queries(PER_BATCH * batches + PAST_THE_END):
        out = run("--email", "--batch-size", "10", "-v", "0")
    assert out.strip() == summary(linked=40)


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        ([], r"Choose one way to match owners to customers: --field NAME, --email or --metadata KEY\.$"),
        (["--field", COLUMN, "--email"], r"\(got --field and --email\)"),
        (["--email", "--metadata", "org_id"], r"\(got --email and --metadata\)"),
        (["--field", "no_such_field"], r"--field no_such_field: .* \(CUSTOMERSYNC\['OWNER_MODEL'\]\) has no such"),
        (["--metadata", "metadata[org_id]"], r"give the metadata key alone"),
        (["--email", "--batch-size", "0"], r"--batch-size must be at least 1"),
        (["not-a-pk" * 40, "--email"], r"Not an owner pk"),  # no number, no UUID, longer than a string pk
    ],
)
def test_errors(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_no_owner_model_is_an_error_naming_the_setting(settings):
    settings.CUSTOMERSYNC = {k: v for k, v in settings.CUSTOMERSYNC.items() if not k.startswith("OWNER_")}
    with pytest.raises(CommandError, match=r"CUSTOMERSYNC\['OWNER_MODEL'\] is not set"):
        run("--email")
