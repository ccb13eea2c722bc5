"""The HTTP client against the fake server: exact headers, bodies and error mapping."""

import pytest
from django.conf import settings

from customersync import __version__
from customersync.exceptions import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    IdempotencyError,
    InvalidRequestError,
    RateLimitError,
)
from customersync.stripe.client import StripeClient

KEY = settings.TEST_API_KEY


@pytest.fixture
def client(stripe):
    return StripeClient(KEY, api_base=stripe.url, api_version="2026-10-28.endive", timeout=2.0)


def test_update_sends_headers_and_exact_body(stripe, client):
    cus = stripe.add_customer(email="old@example.com", metadata={"a": "1"})
    client.update_customer(cus["id"], {"email": "new@example.com", "metadata": {"a": ""}}, idempotency_key="k-1")
    (req,) = stripe.requests
    assert (req.method, req.path) == ("POST", f"/v1/customers/{cus['id']}")
    assert req.body == b"email=new%40example.com&metadata[a]="
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.headers["Stripe-Version"] == "2026-10-28.endive"
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert req.headers["Idempotency-Key"] == "k-1"
    assert req.headers["User-Agent"].startswith(f"customersync/{__version__} ")
    assert stripe.get_customer(cus["id"])["metadata"] == {}


def test_every_post_gets_an_idempotency_key(stripe, client):
    cus = stripe.add_customer()
    client.update_customer(cus["id"], {"name": "A"})
    client.update_customer(cus["id"], {"name": "B"})
    keys = [r.idempotency_key for r in stripe.requests]
    assert all(keys) and keys[0] != keys[1]


def test_get_has_no_body_and_no_idempotency_key(stripe, client):
    cus = stripe.add_customer(email="a@b.c")
    assert client.retrieve_customer(cus["id"])["email"] == "a@b.c"
    (req,) = stripe.requests
    assert req.method == "GET" and req.body == b"" and req.idempotency_key is None


def test_list_paginates(stripe, client):
    ids = [stripe.add_customer(name=f"c{i}")["id"] for i in range(5)]
    pages = list(client.iter_customers(limit=2))
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(c["id"] for p in pages for c in p) == sorted(ids)
    queries = [r.query for r in stripe.requests]
    assert queries[0] == {"limit": "2"}
    assert queries[1] == {"limit": "2", "starting_after": pages[0][-1]["id"]}


def test_400_carries_stripe_fields(stripe, client):
    cus = stripe.add_customer()
    with pytest.raises(InvalidRequestError) as info:
        client.update_customer(cus["id"], {"invoice_prefix": "bad"})
    err = info.value
    assert err.http_status == 400
    assert err.type == "invalid_request_error"
    assert err.param == "invoice_prefix"
    assert err.request_id and err.request_id.startswith("req_")
    assert "invoice_prefix" in str(err) and err.request_id in str(err)


def test_404_resource_missing(stripe, client):
    with pytest.raises(InvalidRequestError) as info:
        client.update_customer("cus_missing", {"name": "x"})
    assert (info.value.http_status, info.value.code) == (404, "resource_missing")


def test_401_never_shows_the_key(stripe):
    bad_key = "sk_test_wrong_key_123456"
    client = StripeClient(bad_key, api_base=stripe.url)
    with pytest.raises(AuthenticationError) as info:
        client.retrieve_customer("cus_x")
    assert info.value.http_status == 401
    assert bad_key not in str(info.value) and bad_key not in repr(info.value.as_dict())
    assert bad_key not in repr(client)


def test_429_lock_timeout(stripe, client):
    cus = stripe.add_customer()
    stripe.inject(status=429, error={"type": "invalid_request_error", "code": "lock_timeout", "message": "busy"})
    with pytest.raises(RateLimitError) as info:
        client.update_customer(cus["id"], {"name": "x"})
    assert info.value.code == "lock_timeout"


def test_should_retry_header(stripe, client):
    cus = stripe.add_customer()
    stripe.inject(status=500, headers={"Stripe-Should-Retry": "false"})
    with pytest.raises(APIError) as info:
        client.update_customer(cus["id"], {"name": "x"})
    assert info.value.should_retry is False and info.value.http_status == 500


def test_html_502_and_truncated_json(stripe, client):
    cus = stripe.add_customer()
    stripe.inject(status=502, body="<html><body>Bad gateway</body></html>")
    with pytest.raises(APIError) as info:
        client.update_customer(cus["id"], {"name": "x"})
    assert info.value.http_status == 502
    stripe.inject(status=200, body='{"id": "cus_')
    with pytest.raises(APIError) as info:
        client.update_customer(cus["id"], {"name": "y"})
    assert "not JSON" in str(info.value)


def test_timeout_and_dropped_connection(stripe):
    cus = stripe.add_customer()
    client = StripeClient(KEY, api_base=stripe.url, timeout=0.3)
    stripe.inject(delay=2.0)
    with pytest.raises(APIConnectionError) as info:
        client.update_customer(cus["id"], {"name": "x"})
    assert "Timed out" in str(info.value)
    stripe.inject(action="drop")
    with pytest.raises(APIConnectionError):
        client.update_customer(cus["id"], {"name": "y"})


def test_idempotency_error_on_reuse_with_other_params(stripe, client):
    cus = stripe.add_customer()
    client.update_customer(cus["id"], {"name": "A"}, idempotency_key="same")
    with pytest.raises(IdempotencyError) as info:
        client.update_customer(cus["id"], {"name": "B"}, idempotency_key="same")
    assert info.value.type == "idempotency_error"
    assert stripe.get_customer(cus["id"])["name"] == "A"


@pytest.mark.parametrize(
    ("length", "status", "retried"),
    [
        ("\u00b2", 200, False),  # a digit to str.isdigit, not to int(): refused, not a ValueError
        ("-1", 200, False),
        ("1e3", 200, False),
        ("\u00b2", 500, True),  # a 5xx stays a 5xx: retried
    ],
    ids=["superscript-two", "negative", "exponent", "5xx"],
)
def test_an_answer_whose_content_length_is_no_length_is_an_api_error(stripe, client, length, status, retried):
    from customersync.exceptions import is_retryable

    cus = stripe.add_customer(name="Ann")
    stripe.inject(status=status, body="{}", headers={"Content-Length": length})
    with pytest.raises(APIError) as info:
        client.update_customer(cus["id"], {"name": "Bea"})
    assert "Content-Length is not one number" in info.value.message and info.value.http_status == status
    assert is_retryable(info.value) is retried
