"""Tests of the fake Stripe server (customersync.testing), over real HTTP with requests.

Plain pytest, no Django: the fake is stdlib only and must work without settings.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from customersync.core.encoding import encode
from customersync.testing import FakeStripeServer, RecordedRequest, control_headers

ROOT = Path(__file__).resolve().parents[2]

FIXTURE = ROOT / "tests" / "fixtures" / "customer_fixture.json"
KEY = "sk_test_" + "fake0server0tests" * 2  # any sk_test_ key; built, not a key-shaped literal
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CASH_MODE = "cash_balance[settings][reconciliation_mode]"
TAX_DISPLAY = "invoice_settings[rendering_options][amount_tax_display]"
CUSTOM_FIELDS = "invoice_settings[custom_fields]"


@pytest.fixture
def server() -> Iterator[FakeStripeServer]:
    with FakeStripeServer() as fake:
        yield fake


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {KEY}"
        yield session


@pytest.fixture
def customer(server: FakeStripeServer) -> dict[str, Any]:
    return server.add_customer(
        id="cus_TESTabcdefgh12",
        email="ann@example.com",
        name="Ann",
        metadata={"a": "1", "b": "2"},
        address={"line1": "1 Main St", "city": "Paris", "country": "FR"},
    )


def post(
    http: requests.Session, server: FakeStripeServer, path: str, body: str | dict[str, Any] = "", **headers: str
) -> requests.Response:
    """POST a form body: a dict goes through wire.encode, a str is sent as is."""
    data = encode(body) if isinstance(body, dict) else body
    return http.post(server.url + path, data=data.encode(), headers={**FORM, **headers}, timeout=5)


def update(
    http: requests.Session, server: FakeStripeServer, customer_id: str, body: str | dict[str, Any], **headers: str
) -> requests.Response:
    return post(http, server, f"/v1/customers/{customer_id}", body, **headers)


def error_of(response: requests.Response) -> dict[str, Any]:
    return response.json()["error"]


# --------------------------------------------------------------------------
# list, retrieve, create, delete


def test_list_is_newest_first_and_paginates(server: FakeStripeServer, http: requests.Session) -> None:
    ids = [c["id"] for c in server.seed(5)]
    newest_first = ids[::-1]

    page1 = http.get(server.url + "/v1/customers", params={"limit": 2}).json()
    assert page1["object"] == "list" and page1["url"] == "/v1/customers"
    assert [c["id"] for c in page1["data"]] == newest_first[:2]
    assert page1["has_more"] is True

    page2 = http.get(server.url + "/v1/customers", params={"limit": 2, "starting_after": newest_first[1]}).json()
    assert [c["id"] for c in page2["data"]] == newest_first[2:4]
    assert page2["has_more"] is True

    page3 = http.get(server.url + "/v1/customers", params={"limit": 2, "starting_after": newest_first[3]}).json()
    assert [c["id"] for c in page3["data"]] == newest_first[4:]
    assert page3["has_more"] is False

    exact = http.get(server.url + "/v1/customers", params={"limit": 5}).json()
    assert [c["id"] for c in exact["data"]] == newest_first and exact["has_more"] is False

    before = http.get(server.url + "/v1/customers", params={"limit": 2, "ending_before": newest_first[3]}).json()
    assert [c["id"] for c in before["data"]] == newest_first[1:3] and before["has_more"] is True


def test_list_sees_customers_made_updated_and_deleted_after_an_earlier_page(
    server: FakeStripeServer, http: requests.Session
) -> None:
    ids = [c["id"] for c in server.seed(4)]
    assert [c["id"] for c in http.get(server.url + "/v1/customers", params={"limit": 1}).json()["data"]] == ids[-1:]
    made = post(http, server, "/v1/customers", {"email": "new@example.com"}).json()["id"]
    assert update(http, server, ids[1], {"name": "Renamed"}).status_code == 200  # keeps its place
    assert http.delete(server.url + f"/v1/customers/{ids[2]}").status_code == 200

    listed = http.get(server.url + "/v1/customers", params={"limit": 2, "starting_after": made}).json()
    assert [c["id"] for c in listed["data"]] == [ids[3], ids[1]] and listed["has_more"] is True
    assert listed["data"][1]["name"] == "Renamed"
    before = http.get(server.url + "/v1/customers", params={"limit": 5, "ending_before": ids[0]}).json()
    assert [c["id"] for c in before["data"]] == [made, ids[3], ids[1]] and before["has_more"] is False
    by_email = http.get(server.url + "/v1/customers", params={"email": "new@example.com"}).json()
    assert [c["id"] for c in by_email["data"]] == [made] and by_email["has_more"] is False


def test_list_rejects_bad_limit_and_unknown_cursor(server: FakeStripeServer, http: requests.Session) -> None:
    for limit in ("0", "101", "abc"):
        response = http.get(server.url + "/v1/customers", params={"limit": limit})
        assert response.status_code == 400, limit
        assert error_of(response)["param"] == "limit"
    response = http.get(server.url + "/v1/customers", params={"starting_after": "cus_nope"})
    assert response.status_code == 400
    assert error_of(response) | {"message": None} == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "message": None,
        "param": "starting_after",
    }


def test_retrieve_and_unknown_customer(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    response = http.get(f"{server.url}/v1/customers/{customer['id']}", headers={"Stripe-Version": "2020-08-27"})
    assert response.status_code == 200
    assert response.json() == server.get_customer(customer["id"])
    assert re.fullmatch(r"req_[A-Za-z0-9]{14}", response.headers["Request-Id"])
    assert response.headers["Stripe-Version"] == "2020-08-27"
    assert response.headers["Content-Type"] == "application/json"

    missing = http.get(f"{server.url}/v1/customers/cus_x")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "message": "No such customer: 'cus_x'",
            "param": "id",
        }
    }
    assert missing.headers["Stripe-Version"] == "2026-10-28.endive"


def test_create_has_the_fixture_field_set(server: FakeStripeServer, http: requests.Session) -> None:
    fixture_fields = set(json.loads(FIXTURE.read_text())["customer"])
    response = post(http, server, "/v1/customers", {"email": "new@example.com", "metadata": {"k": "v"}})
    assert response.status_code == 200
    created = response.json()
    assert set(created) == fixture_fields | {"business_name", "individual_name"}
    assert re.fullmatch(r"cus_[A-Za-z0-9]{14}", created["id"])
    assert re.fullmatch(r"[0-9A-F]{8}", created["invoice_prefix"])
    assert created["email"] == "new@example.com" and created["metadata"] == {"k": "v"}
    assert created["address"] is None and created["tax_exempt"] == "none" and created["balance"] == 0
    assert server.get_customer(created["id"]) == created


def test_delete_marks_deleted(server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]) -> None:
    other = server.add_customer(name="Other")
    stub = {"id": customer["id"], "object": "customer", "deleted": True}
    assert http.delete(f"{server.url}/v1/customers/{customer['id']}").json() == stub
    assert http.get(f"{server.url}/v1/customers/{customer['id']}").json() == stub
    assert [c["id"] for c in http.get(server.url + "/v1/customers").json()["data"]] == [other["id"]]
    response = update(http, server, customer["id"], "name=Zombie")
    assert response.status_code == 404 and error_of(response)["code"] == "resource_missing"
    assert server.get_customer(customer["id"]) == stub


def test_unknown_route_is_404(server: FakeStripeServer, http: requests.Session) -> None:
    response = http.get(server.url + "/v1/charges")
    assert response.status_code == 404
    assert error_of(response)["type"] == "invalid_request_error"


# --------------------------------------------------------------------------
# update semantics


# Queries as Stripe's search language reads them, against three customers: the ids each matches.
SEARCHES = {
    "metadata['k']:'it\\'s'": ["quote"],  # an escaped quote is part of the value
    'metadata["k"]:"it\'s"': ["quote"],  # the other quotes: a single quote is plain
    "metadata['k']:'back\\\\slash'": ["backslash"],  # an escaped backslash is one backslash
    "metadata['k']:'it\\'s' OR email:'c@example.com'": ["other", "quote"],
    "metadata['k']:'it\\'s' or email:'c@example.com'": ["other", "quote"],  # either case
    "metadata['k']:'it\\'s OR email:\\'c@example.com'": [],  # the OR inside the string is text
    "metadata['k']:'it\\'s' AND email:'c@example.com'": [],
    "metadata['k']:'it\\'s' email:'a@example.com'": ["quote"],  # a space is AND
    "-email:'c@example.com'": ["backslash", "quote"],
    "name:'Zoë ☃'": ["other"],
}
BAD_SEARCHES = [
    "metadata['k']:'it's'",  # a quote ends the string: "s'" is no clause
    "metadata['k']:'back\\'",  # the backslash escapes the closing quote: the string never ends
    "email:'a' AND name:'b' OR phone:'c'",  # AND and OR in one query
    "email:'a' OR",
    "metadata:'a'",
    "email['k']:'a'",
    "email:'a'name:'b'",
    "",
]


def searched(http: requests.Session, server: FakeStripeServer, query: str) -> requests.Response:
    return http.get(f"{server.url}/v1/customers/search", params={"query": query})


@pytest.mark.parametrize("query", SEARCHES)
def test_search_reads_quotes_backslashes_and_joins_as_stripe_does(
    server: FakeStripeServer, http: requests.Session, query: str
) -> None:
    ids = {
        "quote": server.add_customer(email="a@example.com", metadata={"k": "it's"})["id"],
        "backslash": server.add_customer(email="b@example.com", metadata={"k": "back\\slash"})["id"],
        "other": server.add_customer(email="c@example.com", name="Zoë ☃", metadata={"k": "it"})["id"],
    }
    response = searched(http, server, query)
    assert response.status_code == 200, response.text
    found = {c["id"] for c in response.json()["data"]}
    assert found == {ids[name] for name in SEARCHES[query]}


@pytest.mark.parametrize("query", BAD_SEARCHES)
def test_search_refuses_what_stripe_cannot_parse(server: FakeStripeServer, http: requests.Session, query: str) -> None:
    server.add_customer(email="a@example.com", metadata={"k": "it's"})
    response = searched(http, server, query)
    assert response.status_code == 400
    assert error_of(response)["code"] == "search_query_invalid" and error_of(response)["param"] == "query"


def test_metadata_per_key_unset_and_unset_all(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    response = update(http, server, customer["id"], "metadata[a]=&metadata[c]=3")
    assert response.json()["metadata"] == {"b": "2", "c": "3"}
    assert server.get_customer(customer["id"])["metadata"] == {"b": "2", "c": "3"}

    update(http, server, customer["id"], "metadata=")
    assert server.get_customer(customer["id"])["metadata"] == {}


def test_empty_string_unsets_a_plain_string(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    update(http, server, customer["id"], "email=&name=Bob")
    stored = server.get_customer(customer["id"])
    assert stored["email"] is None and stored["name"] == "Bob"


def test_address_is_replaced_whole(server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]) -> None:
    update(http, server, customer["id"], {"address": {"city": "Rome", "line2": ""}})
    assert server.get_customer(customer["id"])["address"] == {
        "city": "Rome",
        "country": None,
        "line1": None,
        "line2": None,
        "postal_code": None,
        "state": None,
    }
    update(http, server, customer["id"], "address=")
    assert server.get_customer(customer["id"])["address"] is None


def test_shipping_is_stored_with_its_full_shape(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    update(http, server, customer["id"], {"shipping": {"name": "Ann", "address": {"line1": "2 Rue"}}})
    shipping = server.get_customer(customer["id"])["shipping"]
    assert shipping["name"] == "Ann" and shipping["phone"] is None
    assert shipping["address"]["line1"] == "2 Rue" and shipping["address"]["city"] is None
    assert shipping["carrier"] is None and shipping["tracking_number"] is None


def test_invoice_settings_sub_params_are_independent(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    cid = customer["id"]
    update(http, server, cid, {"invoice_settings": {"custom_fields": [{"name": "PO", "value": "7"}]}})
    update(http, server, cid, {"invoice_settings": {"footer": "Thanks"}})
    settings = server.get_customer(cid)["invoice_settings"]
    assert settings["custom_fields"] == [{"name": "PO", "value": "7"}]
    assert settings["footer"] == "Thanks"

    update(http, server, cid, {"invoice_settings": {"rendering_options": {"amount_tax_display": "exclude_tax"}}})
    settings = server.get_customer(cid)["invoice_settings"]
    assert settings["rendering_options"] == {"amount_tax_display": "exclude_tax", "template": None}
    assert settings["footer"] == "Thanks"

    unset_all = "invoice_settings[custom_fields]=&invoice_settings[rendering_options]=&invoice_settings[footer]="
    update(http, server, cid, unset_all)
    assert server.get_customer(cid)["invoice_settings"] == {
        "custom_fields": None,
        "default_payment_method": None,
        "footer": None,
        "rendering_options": None,
    }


def test_lists_integers_and_enums_are_stored(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    response = update(
        http,
        server,
        customer["id"],
        {
            "preferred_locales": ["fr", "en"],
            "balance": -500,
            "next_invoice_sequence": 3,
            "tax_exempt": "reverse",
            "invoice_prefix": "ACME01",
            "validate": True,
        },
    )
    assert response.status_code == 200, response.text
    stored = server.get_customer(customer["id"])
    assert (stored["preferred_locales"], stored["balance"], stored["next_invoice_sequence"]) == (["fr", "en"], -500, 3)
    assert (stored["tax_exempt"], stored["invoice_prefix"]) == ("reverse", "ACME01")
    update(http, server, customer["id"], "tax_exempt=")
    assert server.get_customer(customer["id"])["tax_exempt"] == "none"


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ("tax_exempt=bogus", "tax_exempt", "Invalid tax_exempt: must be one of"),
        ("tax[validate_location]=later", "tax[validate_location]", "must be one of"),
        (f"{CASH_MODE}=x", CASH_MODE, "must be one of"),
        (f"{TAX_DISPLAY}=x", TAX_DISPLAY, "must be one of"),
        ("invoice_prefix=abc", "invoice_prefix", "invoice_prefix"),
        ("invoice_prefix=ABCDEFGHIJKLM", "invoice_prefix", "1 to 12"),
        ("invoice_prefix=ACME%0A", "invoice_prefix", "1 to 12"),
        ("business_name=" + "b" * 151, "business_name", "150"),
        ("individual_name=" + "i" * 151, "individual_name", "150"),
        ("email=" + "a" * 508 + "%40b.io", "email", "512"),
        ("&".join(f"metadata[k{i}]=v" for i in range(51)), "metadata", "50"),
        ("metadata[" + "k" * 41 + "]=v", "metadata[" + "k" * 41 + "]", "40"),
        ("metadata[k]=" + "v" * 501, "metadata[k]", "500"),
        ("shipping[address][line1]=x", "shipping[name]", "Missing required param: shipping[name]"),
        ("shipping[name]=Ann", "shipping[address]", "Missing required param: shipping[address]"),
        ("foo=bar", "foo", "Received unknown parameter: foo"),
        ("address[foo]=bar", "address[foo]", "Received unknown parameter: address[foo]"),
        ("balance=abc", "balance", "Invalid integer: abc"),
        ("next_invoice_sequence=0", "next_invoice_sequence", "at least 1"),
        (encode({"invoice_settings": {"custom_fields": [{"name": "n", "value": "v"}] * 5}}), CUSTOM_FIELDS, "4"),
        (f"{CUSTOM_FIELDS}[0][name]=PO", CUSTOM_FIELDS, "value"),
        ("tax[ip_address]=not-an-ip", "tax[ip_address]", "IP"),
        ("preferred_locales=", "preferred_locales", "cannot be unset"),
        ("validate=maybe", "validate", "Invalid boolean"),
    ],
)
def test_validation_errors_name_the_param_and_change_nothing(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any], body: str, param: str, message: str
) -> None:
    before = server.get_customer(customer["id"])
    response = update(http, server, customer["id"], "name=Changed&" + body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert message in error["message"]
    assert server.get_customer(customer["id"]) == before  # the valid name=Changed was not applied


def test_source_token_attaches_and_becomes_default(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    cid = customer["id"]
    response = update(http, server, cid, "source=tok_visa")
    card = response.json()["default_source"]
    assert re.fullmatch(r"card_[A-Za-z0-9]{14}", card)
    assert [s["id"] for s in server.sources(cid)] == [card]

    server.attach_source(cid, "card_second")
    assert update(http, server, cid, "default_source=card_second").json()["default_source"] == "card_second"

    expanded = update(http, server, cid, "expand[0]=default_source").json()["default_source"]
    assert expanded["id"] == "card_second" and expanded["object"] == "card"

    bad_default = update(http, server, cid, "default_source=card_nope")
    assert bad_default.status_code == 400
    assert error_of(bad_default)["param"] == "default_source"
    assert error_of(bad_default)["message"] == "No such source: 'card_nope'"

    bad_token = update(http, server, cid, "source=visa")
    assert bad_token.status_code == 400
    assert (error_of(bad_token)["param"], error_of(bad_token)["code"]) == ("source", "resource_missing")
    assert server.get_customer(cid)["default_source"] == "card_second"


def test_legacy_default_card_alias(server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]) -> None:
    server.attach_source(customer["id"], "card_a")
    server.attach_source(customer["id"], "card_b")
    assert update(http, server, customer["id"], "default_card=card_b").status_code == 200
    assert server.get_customer(customer["id"])["default_source"] == "card_b"
    response = update(http, server, customer["id"], "default_card=card_zzz")
    assert response.status_code == 400 and error_of(response)["param"] == "default_card"


def test_tax_ip_address_is_visible_only_when_expanded(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    cid = customer["id"]
    plain = update(http, server, cid, "tax[ip_address]=203.0.113.9&tax[validate_location]=deferred")
    assert plain.status_code == 200 and "tax" not in plain.json()
    assert "tax" not in server.get_customer(cid)

    expanded = http.get(f"{server.url}/v1/customers/{cid}", params={"expand[]": "tax"}).json()
    assert expanded["tax"]["ip_address"] == "203.0.113.9"

    cleared = update(http, server, cid, "tax[ip_address]=&expand[0]=tax").json()
    assert cleared["tax"]["ip_address"] is None


def test_cash_balance_settings_are_kept_off_the_customer(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    response = update(http, server, customer["id"], "cash_balance[settings][reconciliation_mode]=manual")
    assert response.status_code == 200 and "cash_balance" not in response.json()
    assert server.cash_balance_settings(customer["id"])["reconciliation_mode"] == "manual"


# --------------------------------------------------------------------------
# idempotency


def test_idempotent_replay_is_not_applied_twice(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    cid = customer["id"]
    first = update(http, server, cid, "name=First", **{"Idempotency-Key": "key-1"})
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    update(http, server, cid, "name=Second")  # a later change without a key

    replay = update(http, server, cid, "name=First", **{"Idempotency-Key": "key-1"})
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == first.content
    assert server.get_customer(cid)["name"] == "Second"  # the replay did not apply name=First again

    creates = [post(http, server, "/v1/customers", "name=Once", **{"Idempotency-Key": "create-1"}) for _ in range(2)]
    assert creates[0].json()["id"] == creates[1].json()["id"]
    assert [c["name"] for c in server.customers.values()].count("Once") == 1


def test_idempotency_key_reused_with_other_params(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    update(http, server, customer["id"], "name=A", **{"Idempotency-Key": "key-2"})
    response = update(http, server, customer["id"], "name=B", **{"Idempotency-Key": "key-2"})
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "idempotency_error" and "'key-2'" in error["message"]
    assert server.get_customer(customer["id"])["name"] == "A"


def test_validation_errors_are_not_cached(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    headers = {"Idempotency-Key": "key-3"}
    bad = update(http, server, customer["id"], "tax_exempt=bogus", **headers)
    assert bad.status_code == 400
    again = update(http, server, customer["id"], "tax_exempt=bogus", **headers)
    assert again.status_code == 400 and "Idempotent-Replayed" not in again.headers
    fixed = update(http, server, customer["id"], "tax_exempt=exempt", **headers)
    assert fixed.status_code == 200
    assert server.get_customer(customer["id"])["tax_exempt"] == "exempt"


# --------------------------------------------------------------------------
# faults


def test_fault_status_with_headers_then_normal(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    server.inject(status=500, headers={"Stripe-Should-Retry": "true"}, times=2)
    for _ in range(2):
        response = update(http, server, customer["id"], "name=X")
        assert response.status_code == 500
        assert response.headers["Stripe-Should-Retry"] == "true"
        assert error_of(response)["type"] == "api_error"
    assert server.get_customer(customer["id"])["name"] == "Ann"  # faulted requests are not applied
    assert update(http, server, customer["id"], "name=X").status_code == 200
    assert [r.status for r in server.requests] == [500, 500, 200]


def test_fault_with_error_object_and_matching(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    lock_timeout = {"type": "invalid_request_error", "code": "lock_timeout", "message": "Locked."}
    server.inject(status=429, error=lock_timeout)
    # GET does not match the POST fault; the POST after it does.
    assert http.get(f"{server.url}/v1/customers/{customer['id']}").status_code == 200
    response = update(http, server, customer["id"], "name=X")
    assert response.status_code == 429 and response.json() == {"error": lock_timeout}


def test_fault_raw_html_and_truncated_json(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    server.inject(status=502, body=html, headers={"Content-Type": "text/html"})
    server.inject(status=500, body='{"error": {"type": ')
    gateway = update(http, server, customer["id"], "name=X")
    assert (gateway.status_code, gateway.text, gateway.headers["Content-Type"]) == (502, html, "text/html")
    truncated = update(http, server, customer["id"], "name=X")
    assert truncated.status_code == 500
    with pytest.raises(requests.JSONDecodeError):
        truncated.json()


def test_fault_content_length_replaces_the_servers_own_and_closes_after_the_body(
    server: FakeStripeServer, customer: dict[str, Any]
) -> None:
    server.inject(headers={"Content-Length": "\u00b2"})  # a hostile framing: no length at all
    body = b"name=X"
    request = (
        f"POST /v1/customers/{customer['id']} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes: the framing says nothing else
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 200")
    assert [line for line in lines if line.lower().startswith(b"content-length")] == [b"Content-Length: \xb2"]
    assert b"Connection: close" in lines
    assert json.loads(rest)["name"] == "X"  # applied, and answered whole
    assert server.get_customer(customer["id"])["name"] == "X"


def test_fault_headers_must_be_latin_1(server: FakeStripeServer) -> None:
    with pytest.raises(ValueError, match="latin-1"):
        server.inject(status=200, body="{}", headers={"X-Price": "\u20ac"})


def test_fault_delay_times_out_the_client(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    server.inject(delay=2.0)  # the fixture's stop() interrupts the server side of the wait
    with pytest.raises(requests.ReadTimeout):
        http.post(f"{server.url}/v1/customers/{customer['id']}", data={"name": "Late"}, timeout=0.2)


def test_fault_delay_then_normal_handling(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    server.inject(delay=0.05)
    assert update(http, server, customer["id"], "name=Late").status_code == 200
    assert server.get_customer(customer["id"])["name"] == "Late"


@pytest.mark.parametrize("action", ["drop", "reset"])
def test_fault_drop_and_reset_apply_nothing(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any], action: str
) -> None:
    server.inject(action=action)
    with pytest.raises(requests.ConnectionError):
        update(http, server, customer["id"], "name=Lost")
    assert server.get_customer(customer["id"])["name"] == "Ann"
    assert [r.status for r in server.requests] == [None]


def test_fault_drop_after_applies_and_retry_replays(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    server.inject(action="drop_after")
    headers = {"Idempotency-Key": "key-4"}
    with pytest.raises(requests.ConnectionError):
        update(http, server, customer["id"], "balance=100", **headers)
    assert server.get_customer(customer["id"])["balance"] == 100
    update(http, server, customer["id"], "balance=7")  # changed since: a re-application would undo it
    retry = update(http, server, customer["id"], "balance=100", **headers)
    assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["balance"] == 100
    assert server.get_customer(customer["id"])["balance"] == 7


def _send_raw(server: FakeStripeServer, path: str, body: bytes, **headers: str) -> socket.socket:
    """A POST written on a socket of its own, so a test sees the answer's bytes as they arrive."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        f"Authorization: Bearer {KEY}",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


def _receive(sock: socket.socket, count: int) -> bytes:
    """Exactly ``count`` bytes (fewer only at end of stream)."""
    data = b""
    while len(data) < count and (more := sock.recv(count - len(data))):
        data += more
    return data


@pytest.mark.parametrize("action", ["trickle", "trickle_headers"])
def test_fault_trickle_applies_then_answers_a_byte_per_interval_and_stop_ends_it(
    server: FakeStripeServer, customer: dict[str, Any], action: str
) -> None:
    server.inject(action=action, trickle=0.3)
    started = time.monotonic()
    sock = _send_raw(server, f"/v1/customers/{customer['id']}", b"name=Slow")
    with sock:
        first = sock.recv(4096)
        # Applied before a byte of the answer left: it is only the answer that is slow.
        assert server.get_customer(customer["id"])["name"] == "Slow"
        if action == "trickle":
            assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\n\r\n" in first  # the head at once
            received = first.partition(b"\r\n\r\n")[2]
        else:
            received = first
        received += _receive(sock, 3 - len(received))
        # Three bytes of the trickled part: at least two intervals apart.
        assert time.monotonic() - started >= 0.6
        assert received == (b'{"i' if action == "trickle" else b"HTT")
        stopping = time.monotonic()
        server.stop()
        assert _receive(sock, 100_000) == b""  # cut at once, not a byte per 0.3 s for the rest
        assert time.monotonic() - stopping < 3.0


@pytest.mark.parametrize("action", ["trickle", "trickle_headers"])
def test_fault_trickle_delivers_the_whole_answer(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any], action: str
) -> None:
    server.inject(action=action, trickle=0)
    response = update(http, server, customer["id"], "name=Whole")
    assert response.status_code == 200 and response.json() == server.get_customer(customer["id"])
    assert response.json()["name"] == "Whole"


def test_fault_trickle_releases_the_key_so_a_retry_replays(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    server.inject(action="trickle", trickle=60)
    with _send_raw(server, f"/v1/customers/{customer['id']}", b"balance=100", **{"Idempotency-Key": "slow-1"}) as sock:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        # The client gives up on the slow answer and retries under the same key.
        retry = update(http, server, customer["id"], "balance=100", **{"Idempotency-Key": "slow-1"})
    assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["balance"] == 100


def test_fault_endless_body_never_ends(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    server.inject(action="endless")
    with http.post(f"{server.url}/v1/customers/{customer['id']}", data="name=E", headers=FORM, stream=True) as answer:
        assert answer.status_code == 200 and answer.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in answer.headers
        received = bytearray()
        for chunk in answer.iter_content(65536):
            received += chunk
            if len(received) > 4 * 2**20:
                break
    answer, end = json.JSONDecoder().raw_decode(received.decode())
    filler = received[end:]
    assert answer["name"] == "E"
    assert len(filler) > 4 * 2**20 - end and not filler.strip()
    assert server.get_customer(customer["id"])["name"] == "E"


def test_trickle_needs_a_trickle_action(server: FakeStripeServer) -> None:
    with pytest.raises(ValueError, match="trickle"):
        server.inject(trickle=1.0)
    with pytest.raises(ValueError, match="trickle"):
        server.inject(action="drop", trickle=1.0)
    with pytest.raises(ValueError, match="negative"):
        server.inject(action="trickle", trickle=-1)


# --------------------------------------------------------------------------
# request log, auth, waiting


def test_request_log_keeps_exact_bytes(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    raw = b"metadata[k]=a+b&email=x%40y.z&preferred_locales[0]=fr"
    update(http, server, customer["id"], raw.decode(), **{"Idempotency-Key": "key-5"})
    http.get(server.url + "/v1/customers", params={"limit": "1"})
    post_record, get_record = server.requests
    assert isinstance(post_record, RecordedRequest)
    assert post_record.body == raw
    assert post_record.params == {"metadata": {"k": "a b"}, "email": "x@y.z", "preferred_locales": ["fr"]}
    assert (post_record.method, post_record.path) == ("POST", f"/v1/customers/{customer['id']}")
    assert post_record.status == 200
    assert post_record.idempotency_key == "key-5"
    assert post_record.headers["idempotency-key"] == "key-5"  # case-insensitive lookup
    assert (get_record.query, get_record.params, get_record.body) == ({"limit": "1"}, {"limit": "1"}, b"")
    assert post_record.time <= get_record.time


def test_auth_is_required_and_the_key_never_echoed(server: FakeStripeServer, customer: dict[str, Any]) -> None:
    url = f"{server.url}/v1/customers/{customer['id']}"
    missing = requests.get(url, timeout=5)
    assert missing.status_code == 401
    assert error_of(missing) == {"type": "invalid_request_error", "message": "Invalid API Key provided."}
    live = requests.get(url, headers={"Authorization": "Bearer sk_live_" + "s" * 9}, timeout=5)
    assert live.status_code == 401 and "secret123" not in live.text

    with FakeStripeServer(api_key=KEY) as strict:
        strict.add_customer(id="cus_1")
        url = f"{strict.url}/v1/customers/cus_1"
        wrong = requests.get(url, headers={"Authorization": "Bearer sk_test_wrong9"}, timeout=5)
        assert wrong.status_code == 401 and "wrong9" not in wrong.text
        right = requests.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
        assert right.status_code == 200


def test_wait_for_requests_returns_when_they_arrive(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    thread = threading.Thread(target=update, args=(http, server, customer["id"], "name=Bg"))
    thread.start()
    (record,) = server.wait_for_requests(1, timeout=5, method="post", path_prefix="/v1/customers/")
    thread.join()
    assert record.status == 200 and record.params == {"name": "Bg"}


def test_wait_for_requests_times_out_with_a_summary(
    server: FakeStripeServer, http: requests.Session, customer: dict[str, Any]
) -> None:
    update(http, server, customer["id"], "name=Only")
    with pytest.raises(TimeoutError) as caught:
        server.wait_for_requests(2, timeout=0.1, method="POST")
    message = str(caught.value)
    assert "2 request(s)" in message and "got 1" in message
    assert f"POST /v1/customers/{customer['id']} 200" in message


# --------------------------------------------------------------------------
# control API and command


def test_control_api(server: FakeStripeServer, http: requests.Session) -> None:
    control = server.url + "/_fake"
    with requests.Session() as ctl:
        ctl.headers.update(control_headers(KEY))
        created = ctl.post(f"{control}/customers", json={"id": "cus_ctl", "email": "c@example.com"}, timeout=5)
        assert created.status_code == 200 and created.json()["email"] == "c@example.com"
        seeded = ctl.post(f"{control}/seed", json={"n": 2}, timeout=5).json()
        assert len(seeded) == 2 and all(c["email"].endswith("@example.com") for c in seeded)
        assert list(server.customers) == ["cus_ctl"] + [c["id"] for c in seeded]

        assert ctl.post(f"{control}/faults", json={"status": 503}, timeout=5).status_code == 200
        assert update(http, server, "cus_ctl", "name=X").status_code == 503
        assert ctl.post(f"{control}/faults", json={"action": "explode"}, timeout=5).status_code == 400

        logged = ctl.get(f"{control}/requests", timeout=5).json()
        summary = [(r["method"], r["path"], r["status"], r["body"]) for r in logged]
        assert summary == [("POST", "/v1/customers/cus_ctl", 503, "name=X")]

        assert ctl.post(f"{control}/reset", timeout=5).json() == {"ok": True}
        assert server.customers == {} and server.requests == []


def test_seed_is_deterministic() -> None:
    with FakeStripeServer() as one, FakeStripeServer() as two:
        assert one.seed(3, prefix="Acme") == two.seed(3, prefix="Acme")
        first = one.seed(3, prefix="Acme")[0]
        assert first["description"] == "Acme 1" and len(one.customers) == 6  # seeding again adds, ids stay unique


def test_command_serves_and_prints_requests() -> None:
    command = [sys.executable, "-m", "customersync.testing", "--port", "0", "--seed", "2"]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            banner = process.stdout.readline()
            match = re.fullmatch(r"fake-stripe: listening on (http://127\.0\.0\.1:\d+)\n", banner)
            assert match, banner
            url = match.group(1)
            listed = requests.get(f"{url}/v1/customers", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).json()
            cid = listed["data"][0]["id"]
            headers = {"Authorization": f"Bearer {KEY}", **FORM}
            requests.post(f"{url}/v1/customers/{cid}", data=b"email=a%40b.c&metadata[k]=", headers=headers, timeout=5)
            assert process.stdout.readline() == "fake-stripe: GET /v1/customers 200\n"
            expected = f"fake-stripe: POST /v1/customers/{cid} 200 email=a%40b.c&metadata[k]=\n"
            assert process.stdout.readline() == expected
        finally:
            process.terminate()
        assert process.wait(timeout=5) == 0


def test_command_injects_faults_for_a_demo() -> None:
    command = [sys.executable, "-m", "customersync.testing", "--port", "0", "--seed", "1", "--fault", "500x2"]
    command += ["--fault", "400"]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = re.fullmatch(r"fake-stripe: listening on (\S+)\n", process.stdout.readline()).group(1)
            headers = {"Authorization": f"Bearer {KEY}"}
            cid = requests.get(f"{url}/v1/customers", headers=headers, timeout=5).json()["data"][0]["id"]
            statuses = [
                requests.post(f"{url}/v1/customers/{cid}", data="name=A", headers={**headers, **FORM}, timeout=5)
                for _ in range(4)
            ]
            assert [r.status_code for r in statuses] == [500, 500, 400, 200]
            assert statuses[2].json()["error"]["type"] == "invalid_request_error"
        finally:
            process.terminate()
        assert process.wait(timeout=5) == 0


def test_command_refuses_a_malformed_fault() -> None:
    command = [sys.executable, "-m", "customersync.testing", "--port", "0", "--fault", "200"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert result.returncode == 2 and "STATUS[xN]" in result.stderr


def test_command_refuses_a_non_loopback_host() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "customersync.testing", "--host", "0.0.0.0", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 2
    assert "refusing to listen on '0.0.0.0'" in result.stderr and "loopback" in result.stderr


def test_concurrent_request_with_a_key_in_flight_gets_409(server):
    import threading

    customer = server.add_customer()
    server.inject(delay=1.0)
    url = f"{server.url}/v1/customers/{customer['id']}"
    headers = {"Authorization": "Bearer sk_test_123", "Idempotency-Key": "busy-key"}
    first: list = []
    thread = threading.Thread(
        target=lambda: first.append(requests.post(url, data="name=A", headers=headers, timeout=5))
    )
    thread.start()
    server.wait_for_arrivals(1, method="POST")
    second = requests.post(url, data="name=A", headers=headers, timeout=5)
    thread.join()
    assert second.status_code == 409 and second.json()["error"]["type"] == "idempotency_error"
    assert first[0].status_code == 200
    third = requests.post(url, data="name=A", headers=headers, timeout=5)
    assert third.headers.get("Idempotent-Replayed") == "true"
    log = server.requests
    assert [r.replayed for r in log] == [False, False, True]
    assert all(r.finished is not None and r.finished >= r.time for r in log)


def test_latency_delays_every_request(server):
    customer = server.add_customer()
    server.set_latency(0.2, 0.3)
    requests.get(
        f"{server.url}/v1/customers/{customer['id']}", headers={"Authorization": "Bearer sk_test_1"}, timeout=5
    )
    (record,) = server.requests
    assert record.finished - record.time >= 0.2


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's receive stamps are Linux's")
def test_a_request_is_timed_when_its_bytes_arrive_not_when_a_thread_gets_to_it(server):
    """Two requests pipelined on one connection: the second waits, read, while the first sits out
    0.3 s of latency, yet its time is when it arrived. A rate counted at the fake is the rate the
    clients sent at, not one its own threads shaped."""
    customer = server.add_customer()
    server.set_latency(0.3)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    one = f"GET /v1/customers/{customer['id']} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sent = time.monotonic()
        sock.sendall(one.encode() * 2)
        server.wait_for_requests(2, timeout=5)
    first, second = server.requests
    assert second.finished - first.finished >= 0.3  # the second was handled after the first's answer
    assert second.time - sent < 0.1 and first.time - sent < 0.1


def test_account_and_related_lists_for_clients_that_walk_them(server, http):
    customer = server.add_customer()
    server.attach_source(customer["id"], "card_1")
    account = http.get(f"{server.url}/v1/account").json()
    assert account["object"] == "account"
    assert http.get(f"{server.url}/v1/accounts").json()["data"] == []
    cards = http.get(f"{server.url}/v1/customers/{customer['id']}/sources", params={"object": "card"}).json()
    assert [c["id"] for c in cards["data"]] == ["card_1"]
    banks = http.get(f"{server.url}/v1/customers/{customer['id']}/sources", params={"object": "bank_account"}).json()
    assert banks["data"] == []
    assert http.get(f"{server.url}/v1/customers/cus_nope/sources").status_code == 404


def test_list_filters_on_created(server, http):
    server.add_customer(id="cus_old", created=100)
    server.add_customer(id="cus_new", created=200)
    listed = http.get(f"{server.url}/v1/customers", params={"created[gte]": 150}).json()
    assert [c["id"] for c in listed["data"]] == ["cus_new"]
    assert http.get(f"{server.url}/v1/customers", params={"created[gte]": "x"}).status_code == 400
