"""An owner's customer is found by its identity, never by a query its key can rewrite, and only its own.

The search for an earlier run's customer quotes the owner's identity as Stripe's search
language does (the fake server parses it as Stripe does: quotes, backslashes, ``AND``/``OR``),
and a customer the search answers is adopted only if its ``metadata[customersync_owner]`` is
the owner's identity exactly; otherwise the owner's customer is created, under its create
key, and the sync log says why. Every test asserts that no request touched a customer whose
metadata names another owner.

Written against whichever owner model the settings name; the hostile owner keys themselves
need a primary key that is a string (``CUSTOMERSYNC_TEST_OWNER=code``).
"""

from __future__ import annotations

import json
import re
from io import StringIO
from urllib.parse import unquote

import pytest
from django.core.management import call_command

from customersync import sync
from customersync.accounts import client_for
from customersync.models import Customer, PushAttempt, SyncStatus
from customersync.owner.mapping import OWNER_METADATA_KEY, mapping
from customersync.stripe.client import search_string
from tests.owners import field, identity, make_owner, owner_model

pytestmark = pytest.mark.django_db

VICTIM_EMAIL = "victim@example.com"
# Owner keys an attacker may pick, each at most 40 characters (the code organization's pk).
HOSTILE_KEYS = [
    "x' OR email:'victim@example.com",  # ends the string, adds a clause
    "x\\' OR email:'victim@example.com",  # a backslash before the quote
    "x\\",  # a backslash that would escape the closing quote
    "x' or -email:'nobody@example.com",  # lower-case OR and a negation: everyone
    "a:b' AND name:'Vîctim ☃",  # a colon, AND, and a value with accents and a snowman
    '"x" OR email:"victim@example.com"',  # the other quotes
    "ünï'cødé\\'☃ OR email:'victim@example.com",  # both, among non-ASCII letters
]
_CUSTOMER_PATH = re.compile(r"/v1/customers/(cus_[^/]+)(?:/.*)?")


def string_pk() -> bool:
    return owner_model()._meta.pk.get_internal_type() in ("CharField", "TextField")


def other_identity() -> str:
    """Another owner's identity, of the same model."""
    return f"{owner_model()._meta.label_lower}:victim"


def add_victim(stripe, **metadata) -> dict:
    """Another owner's customer in Stripe, matching every clause a hostile key adds."""
    return stripe.add_customer(
        email=VICTIM_EMAIL,
        name="Vîctim ☃",
        metadata={OWNER_METADATA_KEY: other_identity(), **metadata},
    )


def assert_touched_only_the_owners_customers(stripe, owner) -> None:
    """No request addressed a customer whose metadata names another owner (or none)."""
    for request in stripe.requests:
        addressed = _CUSTOMER_PATH.fullmatch(request.path)
        if addressed is None:
            continue
        customer = stripe.get_customer(unquote(addressed.group(1)))
        assert customer is not None, request.summary()
        assert (customer.get("metadata") or {}).get(OWNER_METADATA_KEY) == identity(owner), request.summary()


# -- the query ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [*HOSTILE_KEYS, "plain", ""])
def test_a_searched_value_is_one_string_whatever_it_holds(stripe, value):
    # Stripe's search language as the fake server parses it: the value quoted, nothing else matched.
    wanted = stripe.add_customer(metadata={OWNER_METADATA_KEY: value})
    victim = add_victim(stripe)
    found = client_for(None).search_customers_by_metadata(OWNER_METADATA_KEY, value)
    assert [c["id"] for c in found["data"]] == [wanted["id"]]
    assert victim["id"] not in {c["id"] for c in found["data"]}
    (search,) = stripe.requests
    assert search.query["query"] == f"metadata['{OWNER_METADATA_KEY}']:{search_string(value)}"


def test_search_string_escapes_quotes_and_backslashes_only():
    assert search_string("plain") == "'plain'"
    assert search_string("x' OR email:'v'") == "'x\\' OR email:\\'v\\''"
    assert search_string("x\\") == "'x\\\\'"
    assert search_string('"ü:☃"') == "'\"ü:☃\"'"


# -- a hostile owner key ------------------------------------------------------------------------


# Where an owner's key is a string (CUSTOMERSYNC_TEST_OWNER=code): other setups have no such owner.
if string_pk():

    @pytest.mark.parametrize("key", HOSTILE_KEYS)
    def test_a_hostile_owner_key_never_reaches_another_owners_customer(stripe, key):
        victim = add_victim(stripe)
        before = stripe.get_customer(victim["id"])
        owner = make_owner("Mallory", **{owner_model()._meta.pk.name: key, field("email"): "mallory@example.com"})
        assert owner.pk == key
        customer = sync.get_or_create_for(owner, wait=True)
        assert customer.stripe_id != victim["id"] and customer.sync_status == SyncStatus.IN_SYNC
        search, create = stripe.requests
        assert search.query["query"] == f"metadata['{OWNER_METADATA_KEY}']:{search_string(identity(owner))}"
        assert (create.method, create.path) == ("POST", "/v1/customers")
        created = stripe.get_customer(customer.stripe_id)
        assert created["metadata"][OWNER_METADATA_KEY] == identity(owner) and created["email"] == "mallory@example.com"
        assert stripe.get_customer(victim["id"]) == before
        assert_touched_only_the_owners_customers(stripe, owner)

    @pytest.mark.parametrize("key", HOSTILE_KEYS)
    def test_linking_by_the_owner_identity_takes_the_exact_one_only(stripe, key):
        owner = make_owner("Mallory", **{owner_model()._meta.pk.name: key})
        victim = sync.pull_one(add_victim(stripe)["id"])
        prefix = sync.pull_one(stripe.add_customer(metadata={OWNER_METADATA_KEY: identity(owner)[:-1]})["id"])
        own = sync.pull_one(stripe.add_customer(metadata={OWNER_METADATA_KEY: identity(owner)})["id"])
        stripe.clear_requests()
        call_command("customersync_link", "--metadata", OWNER_METADATA_KEY, stdout=StringIO())
        owners = dict(Customer.objects.values_list("stripe_id", "owner_id"))
        assert owners == {victim.stripe_id: None, prefix.stripe_id: None, own.stripe_id: owner.pk}
        assert stripe.requests == []


# -- a search that answers another owner's customer ---------------------------------------------

# What the search answers instead of the owner's customer: metadata that is not its identity exactly.
NOT_THE_OWNERS = {
    "another owner": lambda owner: {OWNER_METADATA_KEY: other_identity()},
    "upper case": lambda owner: {OWNER_METADATA_KEY: identity(owner).upper()},
    "a trailing space": lambda owner: {OWNER_METADATA_KEY: identity(owner) + " "},
    "a prefix of it": lambda owner: {OWNER_METADATA_KEY: identity(owner)[:-1]},
    "no owner at all": lambda owner: {},
    "the site's key only": lambda owner: {"org_id": str(owner.pk)},
}


def answer_search_with(stripe, *customers: dict) -> None:
    """The next search answers these customers, whatever it asked (a broken or hostile server)."""
    body = {"object": "search_result", "data": list(customers), "has_more": False, "url": "/v1/customers/search"}
    stripe.inject(status=200, body=json.dumps(body), method="GET", path_prefix="/v1/customers/search")


@pytest.mark.parametrize("case", NOT_THE_OWNERS)
def test_a_customer_the_search_answers_is_not_adopted_unless_it_names_the_owner(stripe, case):
    owner = make_owner("Acme", **{field("email"): "billing@acme.test"})
    victim = stripe.add_customer(email=VICTIM_EMAIL, name="Victim", metadata=NOT_THE_OWNERS[case](owner))
    before = stripe.get_customer(victim["id"])
    answer_search_with(stripe, before)
    customer = sync.get_or_create_for(owner, wait=True)
    # Created, under the owner's create key, as if the search had found nothing.
    assert customer.stripe_id != victim["id"] and customer.sync_status == SyncStatus.IN_SYNC
    (create,) = [r for r in stripe.requests if r.method == "POST"]
    assert create.path == "/v1/customers"
    assert str(mapping().create_key(owner.pk, 0)) in create.idempotency_key
    assert stripe.get_customer(customer.stripe_id)["metadata"][OWNER_METADATA_KEY] == identity(owner)
    assert stripe.get_customer(victim["id"]) == before
    assert_touched_only_the_owners_customers(stripe, owner)
    # The sync log says why: on the create's own attempt, which succeeded.
    (attempt,) = PushAttempt.objects.filter(customer=customer)
    assert attempt.outcome == "succeeded" and attempt.error_code == "owner_mismatch"
    assert attempt.error_message.startswith("Not adopted: Stripe's search for metadata[customersync_owner]")
    assert repr(victim["id"]) in attempt.error_message


def test_of_what_the_search_answers_only_the_owners_customer_is_adopted(stripe):
    owner = make_owner("Acme", **{field("email"): "new@acme.test"})
    victim = add_victim(stripe)
    earlier = stripe.add_customer(email="old@acme.test", metadata={OWNER_METADATA_KEY: identity(owner)})
    # The other owner's customer first, and older: neither makes it the one taken.
    answer_search_with(stripe, {**stripe.get_customer(victim["id"]), "created": 1}, stripe.get_customer(earlier["id"]))
    customer = sync.get_or_create_for(owner, wait=True)
    assert customer.stripe_id == earlier["id"]
    (update,) = [r for r in stripe.requests if r.method == "POST"]
    assert update.path == f"/v1/customers/{earlier['id']}"
    assert stripe.get_customer(earlier["id"])["email"] == "new@acme.test"
    assert stripe.get_customer(victim["id"])["email"] == VICTIM_EMAIL
    assert_touched_only_the_owners_customers(stripe, owner)
    first = PushAttempt.objects.filter(customer=customer).order_by("pk").first()
    assert first.error_code == "owner_mismatch" and repr(victim["id"]) in first.error_message


def test_a_search_answer_that_is_no_list_is_an_error_recorded_and_nothing_adopted(stripe, settings):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "MAX_RETRIES": 0}
    owner = make_owner("Acme")
    stripe.inject(status=200, body='{"data": "abc"}', method="GET", path_prefix="/v1/customers/search")
    customer = sync.get_or_create_for(owner)
    result = sync.push(customer.pk)
    customer.refresh_from_db()
    assert result.outcome is sync.Outcome.FAILED and not customer.stripe_id
    assert customer.sync_status == SyncStatus.FAILED
    assert customer.sync_error["message"] == "Stripe's search answer is not a list of customers."
    assert [r.method for r in stripe.requests] == ["GET"]
    (attempt,) = PushAttempt.objects.filter(customer=customer)
    assert attempt.outcome == "failed" and attempt.http_status == 200
