"""The fake server's ``/_fake/`` control API: only for a client with the key and the control header.

Plain pytest, no Django, like ``test_fake_server.py``. A web page open in the
developer's browser must not be able to reset the fake or inject faults (a
``text/plain`` POST needs no preflight; a custom header does, and the server
grants none), the request log it serves never shows an API key, one request
cannot seed without bound, and the server binds only loopback addresses.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from customersync.testing import CONTROL_HEADER, FakeStripeServer, control_headers

KEY = "sk_test_control_key_0123456789"
OTHER_KEY = "sk_test_someone_else_987654321"
NEEDS = (
    "The control API needs the key the server takes, as Authorization: Bearer sk_test_..., "
    f"and the header {CONTROL_HEADER}: 1."
)

# A live-mode key in shape only, built here so no scanner mistakes the file for a leaked key.
FAKE_LIVE_KEY = "sk_" + "live_" + "not-a-real-key"


@pytest.fixture
def server() -> Iterator[FakeStripeServer]:
    with FakeStripeServer(api_key=KEY) as fake:
        fake.add_customer(id="cus_kept", name="Kept")
        yield fake


ROUTES = {
    "reset": ("POST", "/_fake/reset", None),
    "seed": ("POST", "/_fake/seed", {"n": 3}),
    "faults": ("POST", "/_fake/faults", {"status": 500, "times": 5}),
    "add-customer": ("POST", "/_fake/customers", {"id": "cus_new"}),
    "list-customers": ("GET", "/_fake/customers", None),
    "read-requests": ("GET", "/_fake/requests", None),
    "clear-requests": ("DELETE", "/_fake/requests", None),
    "attach-source": ("POST", "/_fake/customers/cus_kept/sources", {"source_id": "card_1"}),
    "change-customer": ("POST", "/_fake/events", {"type": "customer.updated", "customer": "cus_kept", "params": {}}),
    "list-events": ("GET", "/_fake/events", None),
    "list-deliveries": ("GET", "/_fake/deliveries", None),
    "forward": ("POST", "/_fake/forward", {"url": "http://127.0.0.1:9/hook", "secret": "whsec_" + "x"}),
    "hold-deliveries": ("POST", "/_fake/deliveries/hold", None),
    "resume-deliveries": ("POST", "/_fake/deliveries/resume", None),
    "event-retention": ("POST", "/_fake/event_retention", {"seconds": 60}),
    "advance-clock": ("POST", "/_fake/clock", {"seconds": 60}),
    "read-clock": ("GET", "/_fake/clock", None),
    "unknown-route": ("POST", "/_fake/anything", None),
}

# (headers, status): every way of asking without both the right key and the control header
REFUSED = {
    "nothing": ({}, 401),
    "a-web-page-text-plain": ({"Content-Type": "text/plain", "Origin": "http://evil.example"}, 401),
    "key-without-header": ({"Authorization": f"Bearer {KEY}"}, 403),
    "header-without-key": ({CONTROL_HEADER: "1"}, 401),
    "wrong-key": (control_headers(OTHER_KEY), 401),
    "header-not-1": ({"Authorization": f"Bearer {KEY}", CONTROL_HEADER: "yes"}, 403),
    "basic-auth": (
        {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode(), CONTROL_HEADER: "1"},
        401,
    ),
    "key-without-bearer": ({"Authorization": KEY, CONTROL_HEADER: "1"}, 401),
    "live-key": (control_headers(FAKE_LIVE_KEY), 401),
}


def api_update(server: FakeStripeServer, name: str) -> requests.Response:
    return requests.post(
        f"{server.url}/v1/customers/cus_kept",
        data=f"name={name}",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )


@pytest.mark.parametrize(("method", "path", "body"), ROUTES.values(), ids=ROUTES.keys())
@pytest.mark.parametrize(("headers", "status"), REFUSED.values(), ids=REFUSED.keys())
def test_a_control_request_without_the_key_and_the_header_is_refused_and_changes_nothing(
    server: FakeStripeServer, method: str, path: str, body: Any, headers: dict[str, str], status: int
) -> None:
    assert api_update(server, "Before").status_code == 200
    customers, logged = server.customers, [r.summary() for r in server.requests]
    data = b"" if body is None else json.dumps(body).encode()
    response = requests.request(method, server.url + path, data=data, headers=headers, timeout=5)
    assert response.status_code == status
    assert response.json()["error"]["message"] == NEEDS
    assert (status == 401) == ("WWW-Authenticate" in response.headers)
    assert "Access-Control-Allow-Origin" not in response.headers
    assert server.customers == customers and [r.summary() for r in server.requests] == logged
    assert api_update(server, "After").status_code == 200  # no fault was queued


def test_the_preflight_a_page_needs_for_the_control_header_is_never_granted(server: FakeStripeServer) -> None:
    preflight = requests.options(
        server.url + "/_fake/reset",
        headers={
            "Origin": "http://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": f"{CONTROL_HEADER.lower()},authorization",
        },
        timeout=5,
    )
    assert not preflight.ok
    assert not any(name.lower().startswith("access-control-") for name in preflight.headers)
    assert "cus_kept" in server.customers


def test_with_the_key_and_the_header_the_control_api_answers(server: FakeStripeServer) -> None:
    response = requests.post(server.url + "/_fake/reset", headers=control_headers(KEY), timeout=5)
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert server.customers == {}


@pytest.mark.parametrize(
    ("key", "status"),
    [("sk_test_anything", 200), ("sk_test_", 401), (FAKE_LIVE_KEY, 401), ("rk_test_anything", 401)],
)
def test_a_server_that_takes_any_test_key_takes_any_for_control_too(key: str, status: int) -> None:
    with FakeStripeServer() as server:
        response = requests.get(server.url + "/_fake/customers", headers=control_headers(key), timeout=5)
        assert response.status_code == status


@pytest.mark.parametrize(
    ("authorization", "shown"),
    [
        (f"Bearer {KEY}", "Bearer [redacted]"),
        ("Basic " + base64.b64encode(f"{KEY}:".encode()).decode(), "Basic [redacted]"),
        (KEY, "[redacted]"),
        (f"bearer {OTHER_KEY}", "bearer [redacted]"),
    ],
)
def test_the_request_log_served_never_shows_an_authorization_header(
    server: FakeStripeServer, authorization: str, shown: str
) -> None:
    requests.get(server.url + "/v1/customers", headers={"Authorization": authorization}, timeout=5)
    response = requests.get(server.url + "/_fake/requests", headers=control_headers(KEY), timeout=5)
    (logged,) = response.json()
    assert logged["headers"]["Authorization"] == shown
    assert KEY not in response.text and OTHER_KEY not in response.text
    (record,) = server.requests  # the in-process log keeps what was sent, for the test's own asserts
    assert record.headers["Authorization"] == authorization


SEEDS = {
    "past-the-bound": ({"n": 100_001}, "n must be a whole number from 0 to 100000"),
    "a-billion": ({"n": 10**9}, "n must be a whole number from 0 to 100000"),
    "negative": ({"n": -1}, "n must be a whole number from 0 to 100000"),
    "text": ({"n": "5"}, "n must be a whole number from 0 to 100000"),
    "fractional": ({"n": 1.5}, "n must be a whole number from 0 to 100000"),
    "true": ({"n": True}, "n must be a whole number from 0 to 100000"),
    "missing": ({}, "n must be a whole number from 0 to 100000"),
    "a-long-prefix": ({"n": 1, "prefix": "x" * 201}, "prefix must be text of at most 200 characters"),
    "a-prefix-list": ({"n": 1, "prefix": ["x"]}, "prefix must be text of at most 200 characters"),
}


@pytest.mark.parametrize(("body", "message"), SEEDS.values(), ids=SEEDS.keys())
def test_seed_is_bounded(server: FakeStripeServer, body: dict[str, Any], message: str) -> None:
    response = requests.post(server.url + "/_fake/seed", json=body, headers=control_headers(KEY), timeout=5)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == message
    assert list(server.customers) == ["cus_kept"]


def test_seed_within_the_bound(server: FakeStripeServer) -> None:
    body = {"n": 3, "prefix": "Acme"}
    response = requests.post(server.url + "/_fake/seed", json=body, headers=control_headers(KEY), timeout=5)
    assert response.status_code == 200 and [c["description"] for c in response.json()] == ["Acme 1", "Acme 2", "Acme 3"]


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "10.0.0.1", "192.168.1.10", "example.com"])
def test_the_server_refuses_a_host_that_is_not_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="binds only loopback addresses"):
        FakeStripeServer(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_the_server_binds_a_loopback_host(host: str) -> None:
    try:
        server = FakeStripeServer(host)
    except OSError as exc:  # a machine without IPv6 on loopback
        pytest.skip(f"cannot bind {host}: {exc}")
    with server:
        assert requests.get(server.url + "/_fake/customers", headers=control_headers(KEY), timeout=5).ok


def test_the_default_host_is_loopback() -> None:
    with FakeStripeServer() as server:
        assert server.url.startswith("http://127.0.0.1:")


# (Host header as sent): a page on another name, re-pointed at 127.0.0.1 (DNS rebinding), sends its own
FOREIGN_HOSTS = {
    "attacker-name": "attacker.example",
    "attacker-name-with-port": "attacker.example:12111",
    "a-name-that-resolves-to-loopback": "127.0.0.1.nip.io",
    "localhost-with-a-dot": "localhost.",
    "any-address": "0.0.0.0",
    "a-lan-address": "192.168.1.10:12111",
    "two-hosts": "127.0.0.1, attacker.example",
    "port-not-digits": "localhost:80x",
    "ipv4-in-brackets": "[127.0.0.1]",
    "empty": "",
}


@pytest.mark.parametrize("route", ["reset", "read-requests", "faults"])
@pytest.mark.parametrize("host", FOREIGN_HOSTS.values(), ids=FOREIGN_HOSTS.keys())
def test_a_control_request_for_another_host_name_is_refused_even_with_the_key(
    server: FakeStripeServer, route: str, host: str
) -> None:
    method, path, body = ROUTES[route]
    api_update(server, "Before")
    customers, logged = server.customers, [r.summary() for r in server.requests]
    data = b"" if body is None else json.dumps(body).encode()
    for key in (KEY, "sk_test_anything"):
        headers = {**control_headers(key), "Host": host}
        response = requests.request(method, server.url + path, data=data, headers=headers, timeout=5)
        assert response.status_code == 403, response.text
        assert "addressed to localhost, 127.0.0.1 or [::1]" in response.json()["error"]["message"]
        assert "cus_kept" not in response.text  # the request log was not served
    assert server.customers == customers and [r.summary() for r in server.requests] == logged
    assert api_update(server, "After").status_code == 200  # no fault was queued


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "127.0.0.2", "[::1]"])
def test_a_control_request_for_a_loopback_name_is_answered(server: FakeStripeServer, host: str) -> None:
    port = server.url.rsplit(":", 1)[1]
    for name in (host, f"{host}:{port}"):
        headers = {**control_headers(KEY), "Host": name}
        response = requests.get(server.url + "/_fake/customers", headers=headers, timeout=5)
        assert response.status_code == 200, (name, response.text)
