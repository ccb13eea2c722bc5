"""The fake Stripe server's accounts: platforms, connected accounts, test and live keys, key rotation.

Plain pytest, no Django, over real HTTP with requests, like ``test_fake_server.py``.
Each account has its own customers and Idempotency-Keys; a key acts on its
platform, a ``Stripe-Context`` (or ``Stripe-Account``) header on one of the
platform's connected accounts; a retired key is refused even in flight; faults
and rate limits can aim at one account. Without a platform, nothing changes.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from customersync.testing import FakeStripeServer, control_headers

ROOT = Path(__file__).resolve().parents[2]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

PLATFORM = "acct_1PlatformAAAAAA"
OTHER_PLATFORM = "acct_1PlatformBBBBBB"
CONNECTED = "acct_1ConnectedOne11"
CONNECTED_TWO = "acct_1ConnectedTwo22"
OTHERS_CONNECTED = "acct_1ConnectedB3333"

SECRET = "sk_test_platform_a_secret_0001"
RESTRICTED = "rk_test_platform_a_restricted_01"
# Live-mode keys in shape only, built here so no scanner mistakes the file for leaked keys.
LIVE = "sk_" + "live_" + "platform-a-not-real"
LIVE_RESTRICTED = "rk_" + "live_" + "platform-a-not-real"
ROTATED = "sk_test_platform_a_rotated_0002"
OTHER_SECRET = "sk_test_platform_b_secret_0001"

INVALID_KEY = {"type": "invalid_request_error", "message": "Invalid API Key provided."}
EXPIRED_KEY = {"type": "invalid_request_error", "code": "api_key_expired", "message": "Expired API Key provided."}
RATE_LIMITED = (
    "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests. "
    "(rate limit set for {account})"
)


def no_access(account: str) -> dict[str, Any]:
    return {
        "error": {
            "type": "invalid_request_error",
            "code": "account_invalid",
            "message": f"The provided key does not have access to account '{account}' (or that account does not "
            "exist). Application access may have been revoked.",
        }
    }


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@pytest.fixture
def server() -> Iterator[FakeStripeServer]:
    """Two platforms: A (test, restricted and live keys; two connected accounts) and B (one of each)."""
    with FakeStripeServer() as fake:
        fake.add_platform(PLATFORM, [SECRET, RESTRICTED, LIVE, LIVE_RESTRICTED], connected=[CONNECTED])
        fake.add_connected_account(PLATFORM, CONNECTED_TWO)
        fake.add_platform(OTHER_PLATFORM, [OTHER_SECRET], connected=[OTHERS_CONNECTED])
        yield fake


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """Sequential requests share a connection, so a request's Idempotency-Key is released
    (after its answer is written) before the next one is read, as in ``test_fake_server.py``."""
    with requests.Session() as session:
        yield session


@pytest.fixture
def legacy() -> Iterator[FakeStripeServer]:
    with FakeStripeServer() as fake:
        yield fake


def call(
    http: requests.Session,
    server: FakeStripeServer,
    method: str,
    path: str,
    key: str | None,
    body: str | None = None,
    *,
    context: str | None = None,
    account: str | None = None,
    **headers: str,
) -> requests.Response:
    """One API request with ``key``, acting on ``context`` (Stripe-Context) or ``account`` (Stripe-Account)."""
    sent = dict(headers)
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    if context is not None:
        sent["Stripe-Context"] = context
    if account is not None:
        sent["Stripe-Account"] = account
    if body is not None:
        sent.update(FORM)
    return http.request(method, server.url + path, data=body, headers=sent, timeout=5)


def create(
    http: requests.Session, server: FakeStripeServer, key: str | None, body: str = "name=New", **kwargs: Any
) -> requests.Response:
    return call(http, server, "POST", "/v1/customers", key, body, **kwargs)


def listed_ids(http: requests.Session, server: FakeStripeServer, key: str, **kwargs: Any) -> list[str]:
    response = call(http, server, "GET", "/v1/customers", key, **kwargs)
    assert response.status_code == 200, response.text
    return [customer["id"] for customer in response.json()["data"]]


# --------------------------------------------------------------------------
# legacy mode: no platform registered


def test_legacy_mode_takes_any_test_key_and_keeps_one_store(legacy: FakeStripeServer, http: requests.Session) -> None:
    response = create(http, legacy, "sk_test_anything", "name=Ann")
    assert response.status_code == 200 and response.json()["livemode"] is False
    assert list(legacy.customers) == [response.json()["id"]]
    (record,) = legacy.requests
    assert record.account is None and record.key_fingerprint == fingerprint("sk_test_anything")
    assert create(http, legacy, "rk_test_anything").status_code == 401
    assert call(http, legacy, "GET", "/v1/account", "sk_test_x").json()["id"] == "acct_fakestripe000000"


def test_legacy_mode_with_an_api_key_takes_only_that_key(http: requests.Session) -> None:
    with FakeStripeServer(api_key="sk_test_only_this_one") as fake:
        assert create(http, fake, "sk_test_only_this_one").status_code == 200
        refused = create(http, fake, "sk_test_another_key")
        assert refused.status_code == 401 and refused.json() == {"error": INVALID_KEY}
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="Stripe"'
        assert "another_key" not in refused.text


@pytest.mark.parametrize("header", ["context", "account"])
def test_legacy_mode_header_acts_on_a_store_of_its_own(
    legacy: FakeStripeServer, header: str, http: requests.Session
) -> None:
    legacy.add_customer(id="cus_default", name="Default")
    made = create(http, legacy, "sk_test_x", "name=Connected", **{header: "acct_legacyconnected"})
    assert made.status_code == 200
    assert list(legacy.customers) == ["cus_default"]
    assert list(legacy.customers_of("acct_legacyconnected")) == [made.json()["id"]]
    assert listed_ids(http, legacy, "sk_test_x") == ["cus_default"]
    assert listed_ids(http, legacy, "sk_test_x", **{header: "acct_legacyconnected"}) == [made.json()["id"]]
    assert [r.account for r in legacy.requests] == ["acct_legacyconnected", None, "acct_legacyconnected"]
    assert call(http, legacy, "GET", "/v1/account", "sk_test_x", **{header: "acct_legacyconnected"}).json()["id"] == (
        "acct_legacyconnected"
    )


def test_legacy_mode_refuses_a_header_that_names_no_account(legacy: FakeStripeServer, http: requests.Session) -> None:
    refused = create(http, legacy, "sk_test_x", context="cus_not_an_account")
    assert refused.status_code == 403 and refused.json() == no_access("cus_not_an_account")
    assert legacy.customers == {} and legacy.customers_of("acct_x") == {}


# --------------------------------------------------------------------------
# platforms: keys, modes and the account a request acts on


@pytest.mark.parametrize("key", [SECRET, RESTRICTED, LIVE, LIVE_RESTRICTED])
def test_each_key_of_a_platform_acts_on_its_own_account(
    server: FakeStripeServer, key: str, http: requests.Session
) -> None:
    server.add_customer(account=PLATFORM, id="cus_mine", name="Mine")
    server.add_customer(account=OTHER_PLATFORM, id="cus_theirs", name="Theirs")
    assert listed_ids(http, server, key) == ["cus_mine"]
    assert listed_ids(http, server, OTHER_SECRET) == ["cus_theirs"]
    assert [r.account for r in server.requests] == [PLATFORM, OTHER_PLATFORM]


@pytest.mark.parametrize(
    "key",
    [None, "sk_test_anything", "rk_test_someone_else", "sk_" + "live_" + "unknown", "Basic", SECRET + "x"],
)
def test_once_a_platform_is_registered_a_key_of_no_platform_gets_401(
    server: FakeStripeServer, key: str | None, http: requests.Session
) -> None:
    refused = create(http, server, key)
    assert refused.status_code == 401 and refused.json() == {"error": INVALID_KEY}
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="Stripe"'
    assert key is None or key not in refused.text
    assert all(not server.customers_of(a) for a in (None, PLATFORM, CONNECTED, OTHER_PLATFORM))
    (record,) = server.requests
    assert record.account is None


def test_the_api_key_given_at_construction_stops_working_once_platforms_exist(http: requests.Session) -> None:
    with FakeStripeServer(api_key="sk_test_legacy_key_1") as fake:
        assert create(http, fake, "sk_test_legacy_key_1").status_code == 200
        fake.add_platform(PLATFORM, [SECRET])
        assert create(http, fake, "sk_test_legacy_key_1").json() == {"error": INVALID_KEY}
        assert create(http, fake, SECRET).status_code == 200


def test_a_live_key_creates_live_customers_and_a_test_key_test_ones(
    server: FakeStripeServer, http: requests.Session
) -> None:
    live = create(http, server, LIVE, "name=Live")
    restricted_live = create(http, server, LIVE_RESTRICTED, "name=Live2", context=CONNECTED)
    test = create(http, server, SECRET, "name=Test")
    assert (live.json()["livemode"], restricted_live.json()["livemode"], test.json()["livemode"]) == (True, True, False)
    assert server.get_customer(live.json()["id"], account=PLATFORM)["livemode"] is True
    assert server.add_customer(account=PLATFORM, livemode=True)["livemode"] is True


@pytest.mark.parametrize("header", ["context", "account"])
def test_a_context_header_acts_on_a_connected_account(
    server: FakeStripeServer, header: str, http: requests.Session
) -> None:
    server.add_customer(account=PLATFORM, id="cus_platform")
    made = create(http, server, SECRET, "name=Connected", **{header: CONNECTED})
    assert made.status_code == 200
    assert list(server.customers_of(CONNECTED)) == [made.json()["id"]]
    assert list(server.customers_of(PLATFORM)) == ["cus_platform"]
    assert server.customers == {}  # the legacy default store is not used by platforms
    assert listed_ids(http, server, RESTRICTED, **{header: CONNECTED}) == [made.json()["id"]]
    assert listed_ids(http, server, RESTRICTED, **{header: CONNECTED_TWO}) == []
    assert listed_ids(http, server, RESTRICTED) == ["cus_platform"]
    assert [r.account for r in server.requests] == [CONNECTED, CONNECTED, CONNECTED_TWO, PLATFORM]
    assert call(http, server, "GET", "/v1/account", SECRET, **{header: CONNECTED}).json()["id"] == CONNECTED


@pytest.mark.parametrize("target", [OTHERS_CONNECTED, OTHER_PLATFORM, "acct_1NoSuchAccount", "cus_abc"])
@pytest.mark.parametrize("header", ["context", "account"])
def test_an_account_the_key_cannot_reach_gets_403(
    server: FakeStripeServer, target: str, header: str, http: requests.Session
) -> None:
    refused = create(http, server, SECRET, **{header: target})
    assert refused.status_code == 403
    assert refused.json() == no_access(target)  # no "param"
    assert "param" not in refused.json()["error"]
    assert SECRET not in refused.text
    assert all(not server.customers_of(a) for a in (PLATFORM, CONNECTED, OTHER_PLATFORM, OTHERS_CONNECTED))


def test_two_context_headers_naming_different_accounts_get_400(
    server: FakeStripeServer, http: requests.Session
) -> None:
    refused = create(http, server, SECRET, context=CONNECTED, account=CONNECTED_TWO)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "Stripe-Context" in error["message"] and "Stripe-Account" in error["message"]
    assert CONNECTED in error["message"] and CONNECTED_TWO in error["message"]
    assert not server.customers_of(CONNECTED) and not server.customers_of(CONNECTED_TWO)
    agreeing = create(http, server, SECRET, context=CONNECTED, account=CONNECTED)
    assert agreeing.status_code == 200 and list(server.customers_of(CONNECTED)) == [agreeing.json()["id"]]


def test_the_platforms_own_id_in_the_header_acts_on_its_own_account(
    server: FakeStripeServer, http: requests.Session
) -> None:
    made = create(http, server, SECRET, context=PLATFORM)
    assert made.status_code == 200 and list(server.customers_of(PLATFORM)) == [made.json()["id"]]


# --------------------------------------------------------------------------
# one store per account


def test_the_same_customer_id_is_two_customers_in_two_accounts(
    server: FakeStripeServer, http: requests.Session
) -> None:
    server.add_customer(account=PLATFORM, id="cus_shared", name="Platform's", email="p@example.com")
    server.add_customer(account=CONNECTED, id="cus_shared", name="Connected's", email="c@example.com")
    path = "/v1/customers/cus_shared"
    assert call(http, server, "GET", path, SECRET).json()["name"] == "Platform's"
    assert call(http, server, "GET", path, SECRET, context=CONNECTED).json()["name"] == "Connected's"
    missing = call(http, server, "GET", path, SECRET, context=CONNECTED_TWO)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "resource_missing"

    assert call(http, server, "POST", path, SECRET, "name=Renamed", context=CONNECTED).status_code == 200
    assert server.get_customer("cus_shared", account=CONNECTED)["name"] == "Renamed"
    assert server.get_customer("cus_shared", PLATFORM)["name"] == "Platform's"

    search = "/v1/customers/search?query=email:'c@example.com'"
    assert call(http, server, "GET", search, SECRET).json()["data"] == []
    (found,) = call(http, server, "GET", search, SECRET, context=CONNECTED).json()["data"]
    assert found["id"] == "cus_shared"

    assert call(http, server, "DELETE", path, SECRET, context=CONNECTED).json()["deleted"] is True
    deleted_stub = {"id": "cus_shared", "object": "customer", "deleted": True}
    assert server.get_customer("cus_shared", account=CONNECTED) == deleted_stub
    assert "deleted" not in call(http, server, "GET", path, SECRET).json()
    assert listed_ids(http, server, SECRET) == ["cus_shared"]
    assert listed_ids(http, server, SECRET, context=CONNECTED) == []


def test_state_helpers_take_an_account_and_default_to_the_default_store(server: FakeStripeServer) -> None:
    seeded = server.seed(2, prefix="Acme", account=CONNECTED)
    assert server.seed(2, prefix="Acme", account=CONNECTED_TWO) == seeded  # same ids, other store
    assert list(server.customers_of(CONNECTED)) == [c["id"] for c in seeded]
    assert server.customers == {} and server.customers_of(None) == {}
    first = seeded[0]["id"]
    server.update_customer_directly(first, account=CONNECTED, name="Direct", metadata={"segment": ""})
    assert server.get_customer(first, account=CONNECTED)["name"] == "Direct"
    assert server.get_customer(first, account=CONNECTED)["metadata"] == {"seed_index": "1"}
    assert server.get_customer(first, account=CONNECTED_TWO)["name"] == seeded[0]["name"]
    assert server.delete_customer(first, CONNECTED_TWO)["deleted"] is True
    assert server.get_customer(first, account=CONNECTED)["name"] == "Direct"
    server.attach_source(first, "card_1", account=CONNECTED)
    assert [s["id"] for s in server.sources(first, account=CONNECTED)] == ["card_1"]
    with pytest.raises(KeyError):
        server.sources(first, account=PLATFORM)
    assert server.get_customer(first) is None  # the default store
    with pytest.raises(ValueError, match="acct_"):
        server.add_customer(account="cus_not_an_account")

    server.add_customer(id="cus_default")  # existing callers: the default store, as ever
    assert list(server.customers) == ["cus_default"] and server.get_customer("cus_default")["id"] == "cus_default"


def test_idempotency_keys_are_per_account(server: FakeStripeServer, http: requests.Session) -> None:
    key = {"Idempotency-Key": "create-ann-1"}
    in_platform = create(http, server, SECRET, "name=Ann", **key)
    in_connected = create(http, server, SECRET, "name=Ann", context=CONNECTED, **key)
    assert in_platform.status_code == in_connected.status_code == 200
    assert "Idempotent-Replayed" not in in_connected.headers
    assert in_platform.json()["id"] != in_connected.json()["id"]
    assert len(server.customers_of(PLATFORM)) == len(server.customers_of(CONNECTED)) == 1

    again = create(http, server, RESTRICTED, "name=Ann", context=CONNECTED, **key)  # same account: replayed
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["id"] == in_connected.json()["id"]
    other = create(http, server, SECRET, "name=Bob", context=CONNECTED_TWO, **key)  # another params, another account
    assert other.status_code == 200 and other.json()["name"] == "Bob"
    assert [r.replayed for r in server.requests] == [False, False, True, False]


def test_a_key_in_flight_in_one_account_does_not_block_it_in_another(
    server: FakeStripeServer, http: requests.Session
) -> None:
    server.inject(delay=1.0)  # holds the first request
    key = {"Idempotency-Key": "in-flight-1"}
    held: list[requests.Response] = []
    thread = threading.Thread(target=lambda: held.append(create(http, server, SECRET, context=CONNECTED, **key)))
    thread.start()
    server.wait_for_arrivals(1, method="POST")
    same_account = create(http, server, SECRET, context=CONNECTED, **key)
    elsewhere = create(http, server, SECRET, **key)
    thread.join()
    assert same_account.status_code == 409 and same_account.json()["error"]["type"] == "idempotency_error"
    assert elsewhere.status_code == 200 and held[0].status_code == 200
    assert held[0].json()["id"] != elsewhere.json()["id"]


def test_reset_forgets_every_accounts_customers_and_keeps_the_platforms(
    server: FakeStripeServer, http: requests.Session
) -> None:
    server.add_customer(account=CONNECTED, id="cus_gone")
    assert create(http, server, SECRET, **{"Idempotency-Key": "before-reset"}).status_code == 200
    server.reset()
    assert server.customers_of(CONNECTED) == {} and server.customers_of(PLATFORM) == {}
    again = create(http, server, SECRET, **{"Idempotency-Key": "before-reset"})
    assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers  # its keys are forgotten
    assert create(http, server, "sk_test_anything").status_code == 401  # the platforms stay


# --------------------------------------------------------------------------
# key rotation


def test_a_retired_key_gets_401_expired_and_the_new_one_works(server: FakeStripeServer, http: requests.Session) -> None:
    made = create(http, server, SECRET, "name=Before").json()
    server.set_platform_keys(PLATFORM, [ROTATED, LIVE])
    for retired in (SECRET, RESTRICTED, LIVE_RESTRICTED):
        refused = call(http, server, "GET", "/v1/customers", retired, context=CONNECTED)
        assert refused.status_code == 401 and refused.json() == {"error": EXPIRED_KEY}
        assert retired not in refused.text and retired[-6:] not in refused.text
    never_known = create(http, server, "sk_test_never_registered")
    assert never_known.json() == {"error": INVALID_KEY}
    assert listed_ids(http, server, ROTATED) == [made["id"]]  # the account keeps its customers
    assert listed_ids(http, server, LIVE) == [made["id"]]
    assert create(http, server, OTHER_SECRET).status_code == 200  # another platform is not touched

    server.set_platform_keys(PLATFORM, [SECRET])  # a key given back works again
    assert listed_ids(http, server, SECRET) == [made["id"]]
    assert call(http, server, "GET", "/v1/customers", ROTATED).json() == {"error": EXPIRED_KEY}


def test_a_request_in_flight_when_its_key_is_retired_gets_401(server: FakeStripeServer, http: requests.Session) -> None:
    server.inject(delay=1.0)  # keeps the request waiting until the key is retired
    answers: list[requests.Response] = []
    thread = threading.Thread(
        target=lambda: answers.append(create(http, server, SECRET, "name=Late", **{"Idempotency-Key": "late-1"}))
    )
    thread.start()
    server.wait_for_arrivals(1, method="POST")
    server.set_platform_keys(PLATFORM, [ROTATED])
    thread.join()
    (answer,) = answers
    assert answer.status_code == 401 and answer.json() == {"error": EXPIRED_KEY}
    assert server.customers_of(PLATFORM) == {}  # nothing applied
    (record,) = server.requests
    assert (record.status, record.account, record.key_fingerprint) == (401, PLATFORM, fingerprint(SECRET))
    retried = create(http, server, ROTATED, "name=Late", **{"Idempotency-Key": "late-1"})
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers


def test_platform_registration_is_checked(server: FakeStripeServer, http: requests.Session) -> None:
    with pytest.raises(ValueError, match="already registered"):
        server.add_platform(PLATFORM, ["sk_test_new_one"])
    with pytest.raises(ValueError, match="already belongs to 'acct_1PlatformAAAAAA'"):
        server.add_platform("acct_1PlatformCCCCCC", [SECRET])
    with pytest.raises(ValueError, match="already belongs"):
        server.set_platform_keys(OTHER_PLATFORM, [OTHER_SECRET, RESTRICTED])
    with pytest.raises(ValueError, match="acct_"):
        server.add_platform("platform", ["sk_test_new_one"])
    with pytest.raises(ValueError, match="acct_"):
        server.add_platform("acct_1PlatformCCCCCC", ["sk_test_new_one"], connected=["cus_1"])
    with pytest.raises(TypeError):
        server.add_platform("acct_1PlatformCCCCCC", "sk_test_new_one")
    with pytest.raises(ValueError, match="non-empty"):
        server.set_platform_keys(PLATFORM, [""])
    with pytest.raises(KeyError):
        server.add_connected_account("acct_1NoSuchPlatform", CONNECTED)
    with pytest.raises(KeyError):
        server.set_platform_keys("acct_1NoSuchPlatform", ["sk_test_new_one"])
    assert create(http, server, "sk_test_new_one").status_code == 401  # nothing half-registered
    assert listed_ids(http, server, SECRET) == [] and listed_ids(http, server, OTHER_SECRET) == []


# --------------------------------------------------------------------------
# the request log


def test_the_log_tells_accounts_and_keys_apart_without_holding_a_key(
    server: FakeStripeServer, http: requests.Session
) -> None:
    call(http, server, "GET", "/v1/customers", SECRET)
    call(http, server, "GET", "/v1/customers", RESTRICTED, context=CONNECTED)
    call(http, server, "GET", "/v1/customers", None)
    records = server.requests
    assert [r.account for r in records] == [PLATFORM, CONNECTED, None]
    assert [r.key_fingerprint for r in records] == [fingerprint(SECRET), fingerprint(RESTRICTED), ""]
    assert re.fullmatch(r"[0-9a-f]{12}", records[0].key_fingerprint)
    assert records[1].to_dict()["account"] == CONNECTED
    assert records[1].summary() == f"GET /v1/customers 200 [{CONNECTED}]"

    served = requests.get(server.url + "/_fake/requests", headers=control_headers(SECRET), timeout=5)
    assert [(r["account"], r["key_fingerprint"]) for r in served.json()] == [
        (PLATFORM, fingerprint(SECRET)),
        (CONNECTED, fingerprint(RESTRICTED)),
        (None, ""),
    ]
    assert served.json()[0]["headers"]["Authorization"] == "Bearer [redacted]"
    assert SECRET not in served.text and RESTRICTED not in served.text


# --------------------------------------------------------------------------
# faults per account


def test_a_fault_for_one_account_leaves_the_others_alone(server: FakeStripeServer, http: requests.Session) -> None:
    server.inject(status=429, method=None, account=CONNECTED, times=2)
    assert call(http, server, "GET", "/v1/customers", SECRET).status_code == 200
    assert call(http, server, "GET", "/v1/customers", SECRET, context=CONNECTED_TWO).status_code == 200
    assert create(http, server, OTHER_SECRET).status_code == 200
    limited = call(http, server, "GET", "/v1/customers", SECRET, context=CONNECTED)
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit"
    assert create(http, server, RESTRICTED, context=CONNECTED).status_code == 429
    assert create(http, server, RESTRICTED, context=CONNECTED).status_code == 200  # used up
    assert [r.status for r in server.requests] == [200, 200, 200, 429, 429, 200]
    with pytest.raises(ValueError, match="acct_"):
        server.inject(status=500, account="cus_1")


def test_a_fault_without_an_account_still_hits_any_account(server: FakeStripeServer, http: requests.Session) -> None:
    server.inject(status=503, times=2)
    assert create(http, server, SECRET, context=CONNECTED).status_code == 503
    assert create(http, server, OTHER_SECRET).status_code == 503
    assert create(http, server, SECRET).status_code == 200


# --------------------------------------------------------------------------
# rate limits per account


def test_the_rate_limit_answers_429_past_the_count_for_that_account_only(
    server: FakeStripeServer, http: requests.Session
) -> None:
    server.set_rate_limit(CONNECTED, 2)
    statuses = [call(http, server, "GET", "/v1/customers", SECRET, context=CONNECTED).status_code for _ in range(2)]
    elsewhere = [call(http, server, "GET", "/v1/customers", SECRET).status_code for _ in range(3)]
    refused = create(http, server, SECRET, "name=Over", context=CONNECTED, **{"Idempotency-Key": "over-1"})
    assert statuses == [200, 200] and elsewhere == [200, 200, 200]
    assert refused.status_code == 429
    message = RATE_LIMITED.format(account=CONNECTED)
    assert refused.json() == {"error": {"type": "invalid_request_error", "code": "rate_limit", "message": message}}
    assert server.customers_of(CONNECTED) == {}  # a refused request is not applied
    assert server.requests[-1].status == 429 and server.requests[-1].account == CONNECTED

    server.set_rate_limit(CONNECTED, None)
    retried = create(http, server, SECRET, "name=Over", context=CONNECTED, **{"Idempotency-Key": "over-1"})
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers


def test_the_rate_limit_counts_arrivals_in_the_last_second() -> None:
    from customersync.testing.accounts import Accounts

    accounts = Accounts(None)
    accounts.set_rate_limit(CONNECTED, 2)
    assert [accounts.over_limit(CONNECTED, t) for t in (10.0, 10.2, 10.9)] == [False, False, True]
    assert accounts.over_limit(CONNECTED, 11.1) is True  # the refused 10.9 counts too: 10.2, 10.9, 11.1
    assert accounts.over_limit(CONNECTED, 11.95) is False  # only 11.1 and 11.95 are within the last second
    assert accounts.over_limit(CONNECTED, 12.0) is True
    assert accounts.over_limit(PLATFORM, 12.0) is False  # no limit set


def test_a_rate_limit_of_zero_refuses_every_request_and_reset_lifts_it(
    server: FakeStripeServer, http: requests.Session
) -> None:
    server.set_rate_limit(PLATFORM, 0)
    assert call(http, server, "GET", "/v1/customers", SECRET).status_code == 429
    assert call(http, server, "GET", "/v1/customers", SECRET, context=CONNECTED).status_code == 200
    with pytest.raises(ValueError):
        server.set_rate_limit(PLATFORM, -1)
    server.reset()
    assert call(http, server, "GET", "/v1/customers", SECRET).status_code == 200  # reset lifts the limit


# --------------------------------------------------------------------------
# control API and command


def test_the_control_api_registers_platforms_and_aims_at_accounts(
    legacy: FakeStripeServer, http: requests.Session
) -> None:
    control = legacy.url + "/_fake"
    legacy_headers = control_headers("sk_test_anything")
    body = {"account_id": PLATFORM, "keys": [SECRET], "connected": [CONNECTED]}
    assert requests.post(f"{control}/platforms", json=body, headers=legacy_headers, timeout=5).json() == {"ok": True}
    # From now on only a platform's key opens the control API, still with the control header.
    assert requests.get(f"{control}/customers", headers=legacy_headers, timeout=5).status_code == 401
    assert (
        requests.get(f"{control}/customers", headers={"Authorization": f"Bearer {SECRET}"}, timeout=5).status_code
        == 403
    )
    with requests.Session() as ctl:
        ctl.headers.update(control_headers(SECRET))
        seeded = ctl.post(f"{control}/seed", json={"n": 2, "account": CONNECTED}, timeout=5).json()
        assert [c["description"] for c in seeded] == ["Customer 1", "Customer 2"]
        added = ctl.post(f"{control}/customers", json={"id": "cus_p", "account": PLATFORM}, timeout=5)
        assert added.status_code == 200
        listed = ctl.get(f"{control}/accounts/{CONNECTED}/customers", timeout=5).json()
        assert [c["id"] for c in listed] == [c["id"] for c in seeded]
        assert list(legacy.customers_of(PLATFORM)) == ["cus_p"]

        connect = ctl.post(f"{control}/platforms/{PLATFORM}/connected", json={"account_id": CONNECTED_TWO}, timeout=5)
        assert connect.json() == {"ok": True}
        assert listed_ids(http, legacy, SECRET, context=CONNECTED_TWO) == []

        fault = {"status": 500, "method": "GET", "account": CONNECTED}
        assert ctl.post(f"{control}/faults", json=fault, timeout=5).json() == {"ok": True}
        assert call(http, legacy, "GET", "/v1/customers", SECRET).status_code == 200
        assert call(http, legacy, "GET", "/v1/customers", SECRET, context=CONNECTED).status_code == 500

        limit = {"account": CONNECTED_TWO, "per_second": 0}
        assert ctl.post(f"{control}/rate_limits", json=limit, timeout=5).json() == {"ok": True}
        assert call(http, legacy, "GET", "/v1/customers", SECRET, context=CONNECTED_TWO).status_code == 429

        bad = ctl.post(f"{control}/platforms", json={"account_id": "nope", "keys": ["sk_test_z"]}, timeout=5)
        assert bad.status_code == 400 and "acct_" in bad.json()["error"]["message"]
        unknown = ctl.post(f"{control}/platforms/acct_1Missing/keys", json={"keys": ["sk_test_z"]}, timeout=5)
        assert unknown.status_code == 404

        rotated = ctl.post(f"{control}/platforms/{PLATFORM}/keys", json={"keys": [ROTATED]}, timeout=5)
        assert rotated.json() == {"ok": True}
    # The retired key no longer opens the control API either.
    assert requests.get(f"{control}/customers", headers=control_headers(SECRET), timeout=5).status_code == 401
    assert requests.get(f"{control}/customers", headers=control_headers(ROTATED), timeout=5).status_code == 200
    assert call(http, legacy, "GET", "/v1/customers", SECRET).json() == {"error": EXPIRED_KEY}


def test_the_command_registers_platforms_connected_accounts_and_seeds_one(http: requests.Session) -> None:
    command = [sys.executable, "-m", "customersync.testing", "--port", "0", "--platform", f"{PLATFORM}={SECRET}"]
    command += ["--connected", f"{PLATFORM}={CONNECTED},{CONNECTED_TWO}", "--seed-account", f"{CONNECTED}=2"]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            banner = process.stdout.readline()
            match = re.fullmatch(r"fake-stripe: listening on (http://127\.0\.0\.1:\d+)\n", banner)
            assert match, banner + (process.stderr.read() if process.poll() is not None and process.stderr else "")
            url = match.group(1)
            # One connection: each request's line is printed before the next request is read.
            auth = {"Authorization": f"Bearer {SECRET}"}
            connected = http.get(f"{url}/v1/customers", headers={**auth, "Stripe-Context": CONNECTED}, timeout=5)
            assert len(connected.json()["data"]) == 2
            assert http.get(f"{url}/v1/customers", headers=auth, timeout=5).json()["data"] == []
            other = {"Authorization": "Bearer sk_test_not_the_platforms"}
            assert http.get(f"{url}/v1/customers", headers=other, timeout=5).status_code == 401
            assert process.stdout.readline() == f"fake-stripe: GET /v1/customers 200 [{CONNECTED}]\n"
            assert process.stdout.readline() == f"fake-stripe: GET /v1/customers 200 [{PLATFORM}]\n"
            assert process.stdout.readline() == "fake-stripe: GET /v1/customers 401\n"
        finally:
            process.terminate()
        assert process.wait(timeout=5) == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--api-key", "sk_test_x", "--platform", f"{PLATFORM}={SECRET}"], "--api-key has no effect with --platform"),
        (["--connected", f"{PLATFORM}={CONNECTED}"], f"no platform {PLATFORM!r}"),
        (["--platform", f"{PLATFORM}="], "expected ACCOUNT=VALUE"),
        (["--seed-account", f"{CONNECTED}=many"], "N must be a whole number"),
        (["--platform", f"nope={SECRET}"], "an account id looks like acct_"),
    ],
)
def test_the_command_refuses_malformed_accounts(arguments: list[str], message: str) -> None:
    command = [sys.executable, "-m", "customersync.testing", "--port", "0", *arguments]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert result.returncode == 2 and message in result.stderr, result.stderr
