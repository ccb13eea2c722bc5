"""Stripe's answers to a pull or a refresh that the mirror cannot use, from the fake server over HTTP.

- A pull page with one bad customer (a ``created`` that is no time, a lone surrogate, an id that
  is no customer id...): that customer is skipped and reported, the rest of the page is stored.
- A refresh (``pull_one``) of customer A answered with another customer's id, or none: refused
  with a ``StripeError``, logged, nothing stored, neither A nor the other touched.
- The admin's Refresh of a customer whose answer cannot be used, whatever it is: an error
  message naming the customer, never a 500, and the customer as it was.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.forms.models import model_to_dict
from django.test import override_settings
from django.urls import reverse

from customersync import sync
from customersync.exceptions import APIError
from customersync.models import Customer, SyncStatus

pytestmark = pytest.mark.django_db

GOOD = {"object": "customer", "email": "ok@example.com", "created": 1_700_000_000, "livemode": False, "metadata": {}}


def customer(stripe_id: str, **fields) -> dict:
    return {**GOOD, "id": stripe_id, "name": stripe_id, **fields}


def page(*objects: dict) -> str:
    """A list page as Stripe answers it; json.dumps escapes a lone surrogate (\\ud800) as a sender could."""
    return json.dumps({"object": "list", "data": list(objects), "has_more": False, "url": "/v1/customers"})


def table() -> dict[str, tuple[dict, str, str]]:
    """id -> (the bad customer, the key it is reported under, the field named)."""
    return {
        "created-a-word": (customer("cus_bad", created="yesterday"), "cus_bad", "created"),
        "created-1e300": (customer("cus_bad", created=1e300), "cus_bad", "created"),
        "created-minus-1e15": (customer("cus_bad", created=-1e15), "cus_bad", "created"),
        "created-past-2100": (customer("cus_bad", created=10**20), "cus_bad", "created"),
        "created-a-fraction": (customer("cus_bad", created=1_700_000_000.5), "cus_bad", "created"),
        "created-true": (customer("cus_bad", created=True), "cus_bad", "created"),
        "delinquent-a-word": (customer("cus_bad", delinquent="yes"), "cus_bad", "delinquent"),
        "name-lone-surrogate": (customer("cus_bad", name="Ann\ud800"), "cus_bad", "name"),
        "name-escape-sequence": (customer("cus_bad", name="Ann\x1b[2J"), "cus_bad", "name"),
        "name-a-list": (customer("cus_bad", name=["Ann"]), "cus_bad", "name"),
        "metadata-key-surrogate": (customer("cus_bad", metadata={"\udc80": "x"}), "cus_bad", "metadata"),
        "balance-a-word": (customer("cus_bad", balance="lots"), "cus_bad", "balance"),
        "nested-infinity": (
            customer("cus_bad", discount={"coupon": {"percent_off": 1e400}}),
            "cus_bad",
            "stripe_data[discount][coupon][percent_off]",
        ),
        "id-lone-surrogate": (customer("cus_\ud800"), "#2", "id"),
        "id-not-a-customer": (customer("../charges"), "#2", "id"),
        "id-sql-like": (customer("cus_x' OR '1'='1"), "#2", "id"),
        "id-past-its-column": (customer("cus_" + "a" * 300), "#2", "id"),
        "id-with-a-newline": (customer("cus_bad\n"), "#2", "id"),
    }


CASES = table()


@pytest.mark.parametrize(("bad", "key", "field"), CASES.values(), ids=CASES.keys())
def test_one_bad_customer_is_skipped_and_reported_and_the_rest_of_its_page_stored(stripe, caplog, bad, key, field):
    stripe.inject(status=200, body=page(customer("cus_one"), bad, customer("cus_two")), method="GET")
    with caplog.at_level(logging.WARNING, logger="customersync"):
        stats = sync.pull(page_size=10)
    assert (stats.pages, stats.created, stats.skipped) == (1, 2, 1)
    assert list(stats.unstorable) == [key] and field in stats.unstorable[key], stats.unstorable
    assert set(Customer.objects.values_list("stripe_id", flat=True)) == {"cus_one", "cus_two"}
    (request,) = stripe.requests  # one page asked for, nothing else sent
    assert (request.method, request.path, request.query) == ("GET", "/v1/customers", {"limit": "10"})
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"Skipped Stripe customer {key} from a pull" in warning.getMessage()
    assert "\ud800" not in warning.getMessage() and "\x1b" not in warning.getMessage()  # names, never values


@pytest.mark.parametrize("case", ["created-a-word", "name-lone-surrogate", "delinquent-a-word", "balance-a-word"])
def test_a_mirrored_customer_met_bad_is_kept_as_it_was_and_not_marked_deleted(stripe, case):
    bad, _key, field = CASES[case]
    stripe.inject(status=200, body=page(customer("cus_bad"), customer("cus_one")), method="GET")
    sync.pull()
    before = model_to_dict(Customer.objects.get(stripe_id="cus_bad"))
    stripe.inject(status=200, body=page({**bad, "id": "cus_bad"}, customer("cus_one", name="Renamed")), method="GET")
    stats = sync.pull()  # a whole walk: a customer it met is still in Stripe
    assert (stats.updated, stats.skipped, stats.deleted) == (1, 1, 0) and field in stats.unstorable["cus_bad"]
    kept = Customer.objects.get(stripe_id="cus_bad")
    assert model_to_dict(kept) == before and kept.sync_status == SyncStatus.IN_SYNC
    assert Customer.objects.get(stripe_id="cus_one").name == "Renamed"


# -- a refresh answered with another customer ----------------------------------------------------


def other_answers() -> dict[str, dict]:
    return {
        "another-mirrored-customer": customer("cus_B", name="Hijacked", email="attacker@example.com"),
        "a-customer-not-mirrored": customer("cus_C", name="Hijacked"),
        "no-id": {k: v for k, v in customer("cus_A", name="Hijacked").items() if k != "id"},
        "empty-object": {},
        "id-a-number": customer("cus_A", id=12345),
        "id-another-case": customer("cus_a", name="Hijacked"),
        "id-lone-surrogate": customer("cus_A\ud800", name="Hijacked"),
        "id-a-list": customer("cus_A", id=["cus_A"]),
    }


ANSWERS = other_answers()


@pytest.fixture
def pair(stripe) -> tuple[Customer, Customer]:
    stripe.add_customer(id="cus_A", name="Ann", email="ann@example.com")
    stripe.add_customer(id="cus_B", name="Bob", email="bob@example.com")
    sync.pull()
    stripe.clear_requests()
    return Customer.objects.get(stripe_id="cus_A"), Customer.objects.get(stripe_id="cus_B")


def rows() -> list[dict]:
    return [model_to_dict(c) for c in Customer.objects.order_by("pk")]


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_a_refresh_answered_with_another_id_is_refused_and_stores_nothing(stripe, pair, caplog, answer):
    before = rows()
    stripe.inject(status=200, body=json.dumps(answer), method="GET", path_prefix="/v1/customers/cus_A")
    with caplog.at_level(logging.WARNING, logger="customersync"), pytest.raises(APIError) as info:
        sync.pull_one("cus_A")
    assert "Stripe answered the refresh of cus_A with another customer's id" in info.value.message
    assert info.value.should_retry is False and info.value.http_status == 200
    assert rows() == before and Customer.objects.count() == 2
    (request,) = stripe.requests
    assert (request.method, request.path) == ("GET", "/v1/customers/cus_A")
    assert any("Refused Stripe's answer to a refresh of cus_A" in r.getMessage() for r in caplog.records)


def test_a_refresh_answered_with_its_own_id_still_refreshes(stripe, pair):
    ann, _bob = pair
    stripe.update_customer_directly("cus_A", name="Ann Renamed")
    assert sync.pull_one("cus_A").name == "Ann Renamed"


# -- the admin's Refresh: an error message, never a 500 ------------------------------------------


@contextmanager
def raw_server(answer: bytes) -> Iterator[str]:
    """A hostile server on loopback answering every request with ``answer``, byte for byte (the fake
    server writes its own Content-Length; this one writes what the test says); yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # so the loop sees ``stop`` soon after the test ends
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(5)
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


def raw(body: bytes, content_length: bytes | None = None) -> bytes:
    length = str(len(body)).encode() if content_length is None else content_length
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + length
        + (b"\r\nConnection: close\r\n\r\n" + body)
    )


# id -> the answer to GET /v1/customers/cus_A, as JSON text for the fake server or raw bytes for raw_server
ADMIN = {
    "empty-object": "{}",
    "created-a-word": json.dumps(customer("cus_A", created="yesterday")),
    "created-1e300": json.dumps(customer("cus_A", created=1e300)),
    "name-lone-surrogate": json.dumps(customer("cus_A", name="\ud800")),
    "another-customers-id": json.dumps(customer("cus_B", name="Hijacked")),
    "not-json": "<html>maintenance</html>",
    "a-list": "[]",
    "content-length-superscript-two": raw(json.dumps(customer("cus_A")).encode(), b"\xb2"),
}


@pytest.fixture
def operator(admin_user, client):
    client.force_login(admin_user)
    return client


@pytest.mark.parametrize("answer", ADMIN.values(), ids=ADMIN.keys())
@pytest.mark.parametrize("how", ["button", "action"])
def test_the_admin_refresh_says_what_failed_and_never_500s(stripe, settings, operator, pair, how, answer):
    ann, bob = pair
    before = rows()
    if isinstance(answer, bytes):
        with raw_server(answer) as url, override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "API_BASE": url}):
            response = refresh(operator, how, ann)
    else:
        stripe.inject(status=200, body=answer, method="GET", path_prefix="/v1/customers/cus_A")
        response = refresh(operator, how, ann)
    assert response.status_code == 200, response.content[:500]  # the page it redirected to
    errors = [str(m) for m in response.context["messages"] if m.level_tag == "error"]
    assert len(errors) == 1 and errors[0].startswith("cus_A: "), errors
    assert "Traceback" not in errors[0] and settings.CUSTOMERSYNC["API_KEY"] not in errors[0]
    assert rows() == before


def refresh(client, how: str, customer: Customer):
    if how == "button":
        return client.post(reverse("admin:customersync_customer_refresh", args=[customer.pk]), follow=True)
    changelist = reverse("admin:customersync_customer_changelist")
    return client.post(changelist, {"action": "refresh_from_stripe", "_selected_action": [customer.pk]}, follow=True)


def test_one_bad_answer_does_not_stop_the_others_in_an_action(stripe, operator, pair):
    ann, bob = pair
    stripe.update_customer_directly("cus_B", name="Bob Renamed")
    changelist = reverse("admin:customersync_customer_changelist")
    stripe.inject(status=200, body="{}", method="GET", path_prefix="/v1/customers/cus_A")
    response = operator.post(
        changelist, {"action": "refresh_from_stripe", "_selected_action": [ann.pk, bob.pk]}, follow=True
    )
    shown = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert ("success", "Refreshed 1 customer from Stripe.") in shown
    assert [text for level, text in shown if level == "error"][0].startswith("cus_A: ")
    assert Customer.objects.get(pk=bob.pk).name == "Bob Renamed" and Customer.objects.get(pk=ann.pk).name == "Ann"


@pytest.mark.parametrize("error", [RuntimeError("a bug below"), KeyError("id"), OSError("disk")], ids=repr)
def test_whatever_a_refresh_raises_is_an_error_message_with_its_type_and_the_rest_goes_on(
    stripe, operator, pair, monkeypatch, caplog, error
):
    ann, bob = pair
    stripe.update_customer_directly("cus_B", name="Bob Renamed")
    real = sync.pull_one

    def failing_for_ann(stripe_id, **kwargs):
        if stripe_id == "cus_A":
            raise error
        return real(stripe_id, **kwargs)

    monkeypatch.setattr(sync, "pull_one", failing_for_ann)
    changelist = reverse("admin:customersync_customer_changelist")
    with caplog.at_level(logging.ERROR, logger="customersync"):
        response = operator.post(
            changelist, {"action": "refresh_from_stripe", "_selected_action": [ann.pk, bob.pk]}, follow=True
        )
    assert response.status_code == 200
    shown = [(m.level_tag, str(m)) for m in response.context["messages"]]
    name = type(error).__name__
    assert shown == [
        ("success", "Refreshed 1 customer from Stripe."),
        ("error", f"cus_A: the refresh failed ({name}); see the log."),
    ]
    assert Customer.objects.get(pk=bob.pk).name == "Bob Renamed"
    (logged,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "Refresh of cus_A from Stripe failed" in logged.getMessage() and logged.exc_info


def test_a_pull_after_one_stopped_by_a_bad_page_starts_over(stripe):
    stripe.inject(status=200, body=json.dumps({"object": "list", "data": "abc"}), method="GET")
    with pytest.raises(APIError, match="not a list of customers"):
        sync.pull()
    stripe.add_customer(id="cus_later", name="Later")
    assert sync.pull().created == 1  # not an IntegrityError on the stopped walk's place


@pytest.mark.parametrize("last", ["cus_\ud800", "cus_x' OR '1'='1", "cus_bad\n"], ids=["surrogate", "quote", "newline"])
def test_a_page_ending_on_a_junk_id_stops_the_walk_with_a_stripe_error(stripe, last):
    stripe.inject(status=200, body=page(customer("cus_one"), customer(last)), method="GET")
    with pytest.raises(APIError, match="ends on an item whose id is no Stripe id"):
        sync.pull()
    assert not Customer.objects.exists()
    (request,) = stripe.requests  # nothing asked after it, starting after the junk
    assert "starting_after" not in request.query


def test_a_page_whose_answer_cannot_be_read_is_a_stripe_error(settings):
    answer = raw(page(customer("cus_one")).encode(), b"\xb2")  # Content-Length: ², which int() refuses
    with raw_server(answer) as url, override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "API_BASE": url}):
        with pytest.raises(APIError, match=r"cannot be read: its Content-Length is not one number"):
            sync.pull()
    assert not Customer.objects.exists()
