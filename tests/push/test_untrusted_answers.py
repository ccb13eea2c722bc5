"""What a broken or hostile API server sends back.

The server is the tests' fake Stripe on 127.0.0.1, told to answer with exactly
the bytes of each row (``inject(status=..., body=..., headers=...)``).
"""

from __future__ import annotations

import json
import secrets

import pytest

from customersync import sync
from customersync.exceptions import APIError, InvalidRequestError, RetryLater
from customersync.models import Customer, PendingPush, PushAttempt, PushState, SyncStatus
from customersync.stripe.client import StripeClient

pytestmark = pytest.mark.django_db


def mirrored(stripe, **fields):
    return sync.pull_one(stripe.add_customer(**fields)["id"])


def client_for(stripe):
    from django.conf import settings

    return StripeClient(settings.TEST_API_KEY, api_base=stripe.url, timeout=2.0, deadline=5.0)


# -- Stripe's error fields longer than their columns ------------------------------------


def test_oversized_error_fields_are_stored_cut_and_the_customer_shows_the_failure(stripe):
    customer = mirrored(stripe, name="Ann")
    customer.name = "Bea"
    customer.save()
    error = {"type": "invalid_request_error", "code": "c" * 100, "param": "p" * 300, "message": "m" * 20_000}
    stripe.inject(status=400, error=error, headers={"Request-Id": "req_" + "r" * 300})
    result = sync.push(customer.pk)
    assert result.outcome is sync.Outcome.FAILED
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.FAILED
    stored = customer.sync_error
    assert len(stored["code"]) == 64 and stored["code"].endswith("…")
    assert len(stored["param"]) == 255 and len(stored["request_id"]) == 255
    assert len(stored["message"]) == 5000
    attempt = PushAttempt.objects.get(customer=customer)
    assert (len(attempt.error_code), len(attempt.error_param), len(attempt.request_id)) == (64, 255, 255)
    assert PendingPush.objects.get(customer=customer).state == PushState.FAILED  # not stuck in sending


# -- ids that would change the path -------------------------------------------------------


@pytest.mark.parametrize("stripe_id", [".", "..", "a/b", "cus_1?x=1", "cus_1#", " cus_1", ""])
def test_an_id_that_is_not_a_stripe_id_is_refused_before_any_request(stripe, stripe_id):
    client = client_for(stripe)
    for call in (client.retrieve_customer, client.delete_customer, lambda i: client.update_customer(i, {"name": "x"})):
        with pytest.raises(InvalidRequestError) as info:
            call(stripe_id)
        assert info.value.param == "customer" and repr(stripe_id) in info.value.message
    assert stripe.requests == []


def test_a_customer_with_a_dot_id_fails_its_push_naming_it_and_sends_nothing(stripe):
    customer = mirrored(stripe, name="Ann")
    Customer.objects.filter(pk=customer.pk).update(stripe_id="..")
    customer.refresh_from_db()
    customer.name = "Bea"
    customer.save()
    stripe.clear_requests()
    assert sync.push(customer.pk).outcome is sync.Outcome.FAILED
    customer.refresh_from_db()
    assert "Not a Stripe customer id: '..'" in customer.sync_error["message"]
    assert stripe.requests == []


# -- a list that repeats its cursor ----------------------------------------------------------


def page(ids, has_more=True):
    return json.dumps(
        {
            "object": "list",
            "has_more": has_more,
            "url": "/v1/customers",
            "data": [{"id": i, "object": "customer"} for i in ids],
        }
    )


@pytest.mark.parametrize(
    "pages",
    [
        [page(["cus_b", "cus_a"]), page(["cus_b", "cus_a"])],  # the same page again
        [page(["cus_b", "cus_a"]), page(["cus_c", "cus_a"])],  # ends on a cursor already seen
    ],
    ids=["same-page", "old-cursor"],
)
def test_a_list_that_repeats_its_cursor_stops_with_an_error(stripe, pages):
    for body in pages:
        stripe.inject(status=200, body=body, method="GET", path_prefix="/v1/customers")
    with pytest.raises(APIError) as info:
        list(client_for(stripe).iter_customers(limit=2))
    assert "repeated itself after cus_a" in info.value.message
    assert len([r for r in stripe.requests if r.method == "GET"]) == 2  # stopped, not looping


def test_a_list_whose_items_have_no_ids_is_an_error(stripe):
    stripe.inject(status=200, body=json.dumps({"object": "list", "has_more": True, "data": [{"x": 1}]}), method="GET")
    with pytest.raises(APIError):
        list(client_for(stripe).iter_customers())


# -- the deadline, as a push sees it (the lease's side is in test_lease.py and test_client_deadline.py) ----


def test_a_dropped_answer_leaves_the_record_to_resend_not_stuck(stripe):
    customer = mirrored(stripe, name="Ann")
    customer.name = "Bea"
    customer.save()
    stripe.inject(action="drop")
    with pytest.raises(RetryLater):
        sync.push(customer.pk)
    assert PendingPush.objects.get(customer=customer).state == PushState.SENDING
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED


# -- a 200 for another customer ------------------------------------------------------------


def other_customer(stripe, **fields):
    return json.dumps({**stripe.add_customer(**fields), "object": "customer"})


def test_an_update_answered_with_another_customers_id_is_never_stored(stripe):
    customer = mirrored(stripe, name="Ann", email="ann@example.com")
    customer.name = "Bea"
    customer.save()
    stripe.inject(status=200, body=other_customer(stripe, name="Mallory", email="m@evil.example"))
    assert sync.push(customer.pk).outcome is sync.Outcome.FAILED
    customer.refresh_from_db()
    assert customer.stripe_id != "" and customer.email == "ann@example.com" and customer.name == "Bea"
    assert customer.stripe_data["name"] == "Ann"  # nothing of the answer kept
    assert customer.sync_status == SyncStatus.FAILED
    assert "another customer" in customer.sync_error["message"]
    assert PendingPush.objects.get(customer=customer).state == PushState.FAILED


def test_a_create_answered_with_an_id_another_local_customer_mirrors_is_never_stored(stripe):
    known = mirrored(stripe, name="Known")
    new = Customer.objects.create(name="New")
    stripe.inject(status=200, body=json.dumps({**stripe.get_customer(known.stripe_id), "object": "customer"}))
    assert sync.push(new.pk).outcome is sync.Outcome.FAILED
    new.refresh_from_db()
    assert new.stripe_id is None and "already mirrors" in new.sync_error["message"]
    assert PendingPush.objects.get(customer=new).state == PushState.FAILED  # not stuck in sending


@pytest.mark.parametrize("body", ['{"id": 5}', '{"id": "acct_1", "object": "account"}', '{"object": "customer"}'])
def test_a_200_that_is_not_a_customer_is_never_stored(stripe, body):
    customer = mirrored(stripe, name="Ann")
    customer.name = "Bea"
    customer.save()
    stripe.inject(status=200, body=body)
    assert sync.push(customer.pk).outcome is sync.Outcome.FAILED
    customer.refresh_from_db()
    assert customer.stripe_data["name"] == "Ann" and "not a customer" in customer.sync_error["message"]


def test_an_answer_the_mirror_cannot_hold_fails_the_push_naming_the_field(stripe):
    customer = mirrored(stripe, name="Ann")
    customer.name = "Bea"
    customer.save()
    answer = {**stripe.get_customer(customer.stripe_id), "name": "Bea", "phone": "9" * 100}
    stripe.inject(status=200, body=json.dumps(answer))
    assert sync.push(customer.pk).outcome is sync.Outcome.FAILED
    customer.refresh_from_db()
    assert "cannot store" in customer.sync_error["message"] and "phone" in customer.sync_error["message"]
    assert customer.stripe_data["name"] == "Ann"
    assert PendingPush.objects.get(customer=customer).state == PushState.FAILED


# -- redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("location", ["http://127.0.0.1:9/v1/customers/cus_x", "/v1/charges"])
def test_a_redirect_is_never_followed(stripe, status, location):
    customer = mirrored(stripe, name="Ann")
    customer.pending_once = {"source": "tok_visa"}
    customer.name = "Bea"
    customer.save()
    stripe.clear_requests()
    stripe.inject(status=status, body="", headers={"Location": location})
    assert sync.push(customer.pk).outcome is sync.Outcome.FAILED
    assert [(r.method, r.path) for r in stripe.requests] == [("POST", f"/v1/customers/{customer.stripe_id}")]
    customer.refresh_from_db()
    assert "redirect" in customer.sync_error["message"] and "never followed" in customer.sync_error["message"]
    assert customer.stripe_data["name"] == "Ann"


# -- the debug page of an error from the client -----------------------------------------------


# Made at run time, so the page's source excerpts cannot contain it.
SENTINEL = "sk_test_" + secrets.token_hex(16)


def debug_page(err):
    from django.test import RequestFactory, override_settings
    from django.views.debug import technical_500_response

    with override_settings(DEBUG=True):
        response = technical_500_response(RequestFactory().get("/admin/"), type(err), err, err.__traceback__)
    return response.content.decode()


@pytest.mark.parametrize(
    "fault",
    [
        None,  # connection refused
        dict(status=200, body="[" * 200_000 + "]" * 200_000),  # JSON too deep to parse
        dict(action="reset"),
        dict(status=307, body="", headers={"Location": "https://elsewhere.example/"}),
    ],
    ids=["refused", "deep-json", "reset", "redirect"],
)
def test_the_debug_page_of_a_client_error_never_shows_the_key(stripe, fault, settings):
    from customersync.exceptions import StripeError

    base = "http://127.0.0.1:9" if fault is None else stripe.url
    if fault is not None:
        stripe.set_api_key(SENTINEL)
        stripe.inject(method="GET", path_prefix="/v1/customers", **fault)
    client = StripeClient(SENTINEL, api_base=base, timeout=2.0, deadline=5.0)
    try:
        with pytest.raises(StripeError) as info:
            client.retrieve_customer("cus_123")
    finally:
        stripe.set_api_key(settings.TEST_API_KEY)  # the session's server, for the tests after this one
    page = debug_page(info.value)
    assert "retrieve_customer" in page  # the page shows the frames
    assert SENTINEL not in page and SENTINEL.removeprefix("sk_test_") not in page
