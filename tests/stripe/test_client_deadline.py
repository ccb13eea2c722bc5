"""The client's total deadline per request, its cap on an answer's size, and the checks around them.

Against the fake server: answers trickled a byte at a time (body, or headers
too), a chunked body that never ends, JSON nested too deep to parse.
"""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc

import pytest
import requests
from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings

from customersync.accounts import stripe_client
from customersync.exceptions import APIConnectionError, APIError, ConfigurationError
from customersync.stripe import transport
from customersync.stripe.client import StripeClient
from customersync.testing import FakeStripeServer

KEY = settings.TEST_API_KEY
DEADLINE = 1.0
# How long past the deadline a call may return: generous, the machine is shared.
SLACK = 2.0
# Seconds between the bytes of a trickled answer: far below the per-read
# timeout, so only the deadline can end the call.
TRICKLE = 0.2


@pytest.fixture
def client(stripe):
    return StripeClient(KEY, api_base=stripe.url, timeout=2.0, deadline=DEADLINE)


def timed(call):
    """Run ``call`` in a thread; (elapsed seconds, exception or None), or fail once it outlives deadline + slack."""
    outcome: dict = {}

    def run():
        started = time.monotonic()
        try:
            call()
        except Exception as err:
            outcome["error"] = err
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE + SLACK)
    assert not thread.is_alive(), f"the call was still running {DEADLINE + SLACK} s after it started"
    return outcome["elapsed"], outcome.get("error")


def pooled_connections(client, stripe):
    """The connections the client's pool for the fake server would reuse."""
    manager = client.session.get_adapter(stripe.url + "/").poolmanager
    return [conn for key in manager.pools.keys() for conn in list(manager.pools[key].pool.queue) if conn is not None]


@pytest.mark.parametrize("action", ["trickle", "trickle_headers"])
def test_a_trickled_answer_is_cut_at_the_deadline(stripe, client, action):
    cus = stripe.add_customer(name="Ann")
    path = f"/v1/customers/{cus['id']}"
    answer = client.retrieve_customer(cus["id"])
    assert len(str(answer)) * TRICKLE > 60  # left alone, the trickle would take over a minute
    stripe.inject(action=action, trickle=TRICKLE, path_prefix=path)

    elapsed, error = timed(lambda: client.update_customer(cus["id"], {"name": "Bob"}))

    assert isinstance(error, APIConnectionError), error
    assert DEADLINE <= elapsed < DEADLINE + SLACK
    message = str(error)
    assert "1 s deadline passed" in message and "REQUEST_DEADLINE" in message and f"POST {path}" in message
    assert KEY not in message and KEY not in repr(error.as_dict())
    assert not isinstance(error.__cause__, requests.Timeout)  # cut by the deadline, not by a read timeout
    # Stripe applied it; only the answer was slow. The push retries under its key.
    assert stripe.get_customer(cus["id"])["name"] == "Bob"

    # The cut connection is not kept for reuse, and the next request goes through.
    assert all(conn.sock is None for conn in pooled_connections(client, stripe))
    assert client.update_customer(cus["id"], {"name": "Cy"})["name"] == "Cy"
    # (The fake is the session's: a request an earlier test left behind may be logged too.)
    assert [(r.method, r.status) for r in stripe.requests if r.path == path] == [("GET", 200), *[("POST", 200)] * 2]


def test_a_server_that_says_nothing_is_cut_at_the_deadline_not_at_the_read_timeout():
    # A server of its own: stopping it ends the delay, which would otherwise log the request during a later test.
    with FakeStripeServer(api_key=KEY) as server:
        cus = server.add_customer()
        client = StripeClient(KEY, api_base=server.url, timeout=30.0, deadline=DEADLINE)
        server.inject(delay=30.0, method="GET")
        elapsed, error = timed(lambda: client.retrieve_customer(cus["id"]))
    assert isinstance(error, APIConnectionError) and "deadline passed" in str(error)
    assert elapsed < DEADLINE + SLACK


def test_an_endless_body_fails_at_the_size_cap_without_holding_more(stripe):
    cus = stripe.add_customer()
    client = StripeClient(KEY, api_base=stripe.url, timeout=2.0, deadline=60.0)
    client.retrieve_customer(cus["id"])  # the connection exists before memory is measured
    stripe.inject(action="endless", method="GET")
    cap = transport.MAX_RESPONSE_BYTES
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(APIError) as info:
            client.retrieve_customer(cus["id"])
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"larger than {cap} bytes (16 MiB)" in str(info.value)
    assert info.value.http_status == 200
    assert cap < peak < 1.25 * cap  # it read up to the cap, and kept no more
    assert elapsed < 60.0  # the cap ended it, not the deadline
    assert all(conn.sock is None for conn in pooled_connections(client, stripe))
    assert client.retrieve_customer(cus["id"])["id"] == cus["id"]


def test_a_declared_length_over_the_cap_is_refused_before_reading(stripe, client, monkeypatch):
    cus = stripe.add_customer(description="x" * 5000)
    monkeypatch.setattr(transport, "MAX_RESPONSE_BYTES", 4096)
    with pytest.raises(APIError, match="larger than 4096 bytes"):
        client.retrieve_customer(cus["id"])
    monkeypatch.undo()
    assert client.retrieve_customer(cus["id"])["description"] == "x" * 5000


@pytest.mark.parametrize("status, what", [(200, "not JSON"), (500, "not a Stripe error")])
def test_json_nested_too_deep_is_an_api_error(stripe, client, status, what):
    cus = stripe.add_customer()
    depth = 200_000
    stripe.inject(status=status, body="[" * depth + "]" * depth)
    with pytest.raises(APIError) as info:
        client.update_customer(cus["id"], {"name": "x"})
    assert what in str(info.value) and "nested too deep" in str(info.value)
    assert info.value.http_status == status


@pytest.mark.parametrize(
    "body, deep",
    [
        ("[ {\n\t[\r{\f[\v" * 13, True),  # 65 openers, any whitespace between
        ("[" * 63 + "]" * 63, False),  # 63 in a row: parsed (and not an object)
        ('[{"a": [' * 30 + "1" + "]}]" * 30, False),  # deeper, but never 64 openers in a row
    ],
)
def test_openers_in_a_row_count_whatever_whitespace_is_between(stripe, client, body, deep):
    stripe.inject(status=200, body=body, method="GET")
    with pytest.raises(APIError, match="not JSON") as info:
        client.retrieve_customer("cus_deep")
    assert ("nested too deep" in str(info.value)) is deep


def test_a_normal_request_is_unaffected_and_keeps_its_connection(stripe, client):
    cus = stripe.add_customer(email="a@example.com")
    elapsed, error = timed(lambda: client.retrieve_customer(cus["id"]))
    assert error is None and elapsed < DEADLINE
    (first,) = pooled_connections(client, stripe)
    assert client.update_customer(cus["id"], {"email": "b@example.com"})["email"] == "b@example.com"
    (second,) = pooled_connections(client, stripe)
    assert second is first and second.sock is not None  # kept alive and reused
    assert [r.status for r in stripe.requests if r.path == f"/v1/customers/{cus['id']}"] == [200, 200]


class Noted(transport.Watchdog):
    """A watchdog that says when it fires (nothing to cut: no request runs under it)."""

    def __init__(self, seconds):
        super().__init__(seconds)
        self.went_off = threading.Event()

    def _fire(self):
        super()._fire()
        self.went_off.set()


def test_every_deadline_fires_on_time_from_one_thread_and_a_finished_one_never_fires():
    long, finished, short = Noted(60.0), Noted(0.2), Noted(0.4)
    with long:
        with finished:
            pass  # its request ended before its deadline
        with short:  # due before the long one the thread was waiting for
            assert short.went_off.wait(5.0)
        assert short.fired and not long.fired and not finished.fired
    assert not finished.went_off.wait(0.3)  # past its deadline: dropped, not fired
    assert [t.name for t in threading.enumerate()].count("customersync-deadlines") == 1


def test_many_requests_add_no_thread_each(stripe, client):
    cus = stripe.add_customer(email="a@example.com")
    client.retrieve_customer(cus["id"])
    before = set(threading.enumerate())
    for _ in range(20):
        client.retrieve_customer(cus["id"])
    # Threads other tests started may end meanwhile: only a thread that was not there counts.
    assert set(threading.enumerate()) - before == set()


def test_the_environments_proxy_is_used_read_when_the_client_is_made(monkeypatch):
    """HTTP_PROXY and the like still apply, though the client reads them once, not per request."""
    import http.server
    import json

    seen = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)  # a proxy is asked for the absolute URL
            body = json.dumps({"id": "cus_Proxied", "object": "customer"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        client = StripeClient(KEY, api_base="http://stripe.invalid", timeout=2.0, deadline=DEADLINE)
        monkeypatch.delenv("HTTP_PROXY")  # read already
        assert client.retrieve_customer("cus_Proxied")["id"] == "cus_Proxied"
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert seen == ["http://stripe.invalid/v1/customers/cus_Proxied"]


def test_what_before_send_returns_is_called_once_the_request_is_written_before_the_answer(stripe, client):
    """The rate budget logs a request when its bytes are written (``before_send``'s return), not
    when the answer comes back: the answer here takes 0.5 s."""
    customer = stripe.add_customer()
    stripe.set_latency(0.5)
    written: list[float] = []
    client.update_customer(customer["id"], {"name": "A"}, before_send=lambda: lambda: written.append(time.monotonic()))
    (request,) = stripe.requests
    assert len(written) == 1
    assert request.time <= written[0] < request.finished - 0.4


def test_a_request_that_fails_while_written_is_still_reported_once():
    """A refused connection: what ``before_send`` returned is called anyway (the budget counts the
    request as sent, the safe side), and once; a failure there does not replace the request's."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the with ends: nothing listens there
    calls = []

    def written():
        calls.append(1)
        raise ConnectionError("the budget's Redis is away")

    client = StripeClient(KEY, api_base=f"http://127.0.0.1:{port}", timeout=2.0, deadline=DEADLINE)
    with pytest.raises(APIConnectionError):
        client.update_customer("cus_1", {"name": "A"}, before_send=lambda: written)
    assert calls == [1]


def test_the_deadline_comes_from_the_settings_and_must_be_positive(stripe):
    with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "REQUEST_DEADLINE": 7.5}):
        assert stripe_client().deadline == 7.5
    assert StripeClient(KEY).deadline == 30.0
    for bad in (0, -1.0):
        with pytest.raises(ConfigurationError, match="deadline"):
            StripeClient(KEY, deadline=bad)


def check_ids(**conf):
    with override_settings(CUSTOMERSYNC={"API_KEY": "sk_test_1", **conf}):
        return {m.id: m for m in run_checks(databases=[]) if m.id and m.id.startswith("customersync.")}


def test_e030_when_the_lease_is_not_comfortably_above_the_deadline():
    found = check_ids(LEASE_SECONDS=60, REQUEST_DEADLINE=30)
    assert set(found) == {"customersync.E030"}
    hint = found["customersync.E030"].hint
    assert "LEASE_SECONDS" in hint and "REQUEST_DEADLINE" in hint
    assert "REQUEST_DEADLINE = 30" in hint and "at least 70" in hint and "it is 60" in hint
    assert check_ids(LEASE_SECONDS=70, REQUEST_DEADLINE=30) == {}


def test_no_e030_for_the_defaults_nor_the_test_settings():
    assert check_ids() == {}  # LEASE_SECONDS 120, REQUEST_DEADLINE 30
    with override_settings(CUSTOMERSYNC=settings.CUSTOMERSYNC):
        assert "customersync.E030" not in {m.id for m in run_checks(databases=[])}


def test_e031_for_a_deadline_that_is_not_a_positive_number():
    assert set(check_ids(REQUEST_DEADLINE=0)) == {"customersync.E031"}


def test_e032_for_each_status_threshold_that_is_not_a_number():
    def errors(**conf):
        with override_settings(CUSTOMERSYNC={"API_KEY": "sk_test_1", **conf}):
            return [m.msg for m in run_checks(databases=[]) if m.id == "customersync.E032"]

    found = errors(STATUS_MAX_READY_AGE="5m", STATUS_MAX_FAILED=-1, STATUS_MAX_WEBHOOK_AGE=True)
    assert [message.split(" is ")[0] for message in found] == [
        "CUSTOMERSYNC['STATUS_MAX_READY_AGE']",
        "CUSTOMERSYNC['STATUS_MAX_FAILED']",
        "CUSTOMERSYNC['STATUS_MAX_WEBHOOK_AGE']",
    ]
    assert "number of customers" in found[1] and "number of seconds" in found[2]
    assert errors(STATUS_MAX_READY_AGE=0, STATUS_MAX_FAILED=0, STATUS_MAX_WEBHOOK_AGE=None) == []
    assert errors(STATUS_MAX_WEBHOOK_AGE=86400.0) == []


def test_the_visibility_timeout_check_counts_the_deadline_not_the_read_timeout():
    # lease 120 + deadline 30 + 10 = 160 > 155 (with TIMEOUT, 20, it would be 150).
    with override_settings(CELERY_BROKER_TRANSPORT_OPTIONS={"visibility_timeout": 155}):
        assert set(check_ids()) == {"customersync.W013"}
    with override_settings(CELERY_BROKER_TRANSPORT_OPTIONS={"visibility_timeout": 160}):
        assert check_ids() == {}
