"""The fake server plays Stripe's side of the webhooks: changes made in Stripe give Stripe's events,
signed as Stripe signs them and sent to a webhook URL (``forward_to``, ``send_event``, the control
API's ``/_fake/events`` and the command's ``--forward-to``).

The signature is checked with the app's own ``verify`` and ``sign``: the fake computes it
independently, so the two agreeing is the check. Bytes sent are asserted against a receiver of
the test's own; the command's forwarding goes to a live site's real webhook view.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from customersync import sync
from customersync.testing import DEFAULT_API_VERSION, FakeStripeAPIError, FakeStripeServer, control_headers, sign_event
from customersync.webhooks import sign
from customersync.webhooks.validation import EVENT_ID, check_event
from customersync.webhooks.views import verify
from tests.e2e.test_quickstart import Lines
from tests.owners import field, make_owner
from tests.private_services import free_port

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk_test_" + "webhook0kit0tests"
SECRET = "whsec_" + "fake0webhook0tests"
OLD_SECRET = "whsec_" + "rolled0out0soon"
LYON = {"line1": "9 Old Street", "city": "Lyon", "postal_code": "69001", "country": "FR", "line2": None, "state": None}
PARIS = {"line1": "1 rue de Rivoli", "city": "Paris", "postal_code": "75001", "country": "FR"}
EVENT_KEYS = ["id", "object", "api_version", "created", "data", "livemode", "pending_webhooks", "request", "type"]


class Receiver:
    """A webhook endpoint of the test's own on 127.0.0.1: keeps each request's path, headers and
    body as they arrived, and answers ``status`` with ``answer``."""

    def __init__(self, status: int = 200, answer: bytes = b'{"received": true}') -> None:
        self.status, self.answer = status, answer
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((self.path, dict(self.headers), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(receiver.answer)))
                if 300 <= receiver.status < 400:
                    self.send_header("Location", "/elsewhere/")
                self.end_headers()
                self.wfile.write(receiver.answer)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stripe/webhook/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FakeStripeServer]:
    with FakeStripeServer(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


def stripe_signature(body: bytes, secret: str, timestamp: int) -> str:
    """Stripe's v1 signature, computed here as the tests' own third opinion."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------
# the events


def test_a_change_made_in_stripe_gives_stripes_customer_updated_event(server: FakeStripeServer) -> None:
    customer = server.add_customer(email="old@example.com", address=LYON, metadata={"plan": "free", "kept": "1"})
    before = int(time.time())
    event = server.change_customer(
        customer["id"], address=PARIS, email="new@example.com", metadata={"plan": "pro", "seats": "5"}
    )
    assert list(event) == EVENT_KEYS and EVENT_ID.fullmatch(event["id"])
    assert (event["object"], event["type"], event["api_version"]) == ("event", "customer.updated", DEFAULT_API_VERSION)
    assert before <= event["created"] <= time.time() and event["livemode"] is False
    stored = server.get_customer(customer["id"])
    assert stored["address"] == {**PARIS, "line2": None, "state": None}  # replaced whole, as the API does
    assert stored["metadata"] == {"plan": "pro", "kept": "1", "seats": "5"}
    assert event["data"] == {
        "object": stored,
        "previous_attributes": {
            "address": {"line1": "9 Old Street", "city": "Lyon", "postal_code": "69001"},
            "email": "old@example.com",
            "metadata": {"plan": "free", "seats": None},
        },
    }
    assert event["request"]["id"].startswith("req_") and len(event["request"]["idempotency_key"]) == 36
    assert server.events == [event] and server.requests == []  # an event, not an API request


def test_a_change_the_api_refuses_is_refused_here_and_gives_no_event(server: FakeStripeServer) -> None:
    customer = server.add_customer(name="Ann")
    with pytest.raises(FakeStripeAPIError) as refused:
        server.change_customer(customer["id"], name="Bob", tax_exempt="sometimes")
    assert (refused.value.status, refused.value.param) == (400, "tax_exempt")
    with pytest.raises(FakeStripeAPIError) as missing:
        server.change_customer("cus_missing", name="Bob")
    assert (missing.value.status, missing.value.message) == (404, "No such customer: 'cus_missing'")
    assert server.get_customer(customer["id"])["name"] == "Ann" and server.events == []


def test_created_and_removed_in_the_dashboard_give_their_events(server: FakeStripeServer) -> None:
    created = server.create_customer(email="new@example.com", metadata={"plan": "pro"})
    obj = created["data"]["object"]
    assert (created["type"], list(created["data"])) == ("customer.created", ["object"])
    assert obj == server.get_customer(obj["id"]) and obj["email"] == "new@example.com"
    removed = server.remove_customer(obj["id"])
    assert (removed["type"], removed["data"]) == ("customer.deleted", {"object": obj})  # as it was
    assert server.get_customer(obj["id"]) == {"id": obj["id"], "object": "customer", "deleted": True}
    assert [e["type"] for e in server.events] == ["customer.created", "customer.deleted"]
    with pytest.raises(FakeStripeAPIError):
        server.remove_customer(obj["id"])  # deleted already


def test_the_events_are_ones_the_apps_webhook_takes(server: FakeStripeServer) -> None:
    customer = server.add_customer(email="a@example.com", address=LYON)
    events = [
        server.change_customer(customer["id"], address=PARIS, metadata={"k": "v"}),
        server.create_customer(name="New", phone="+15550000001"),
        server.remove_customer(customer["id"]),
    ]
    for event in events:
        check_event(event)  # the app's own check on an event's shape


def test_an_event_about_a_connected_accounts_customer_names_the_account(server: FakeStripeServer) -> None:
    server.add_platform("acct_platform", [KEY], connected=["acct_shop"])
    own = server.add_customer(account="acct_platform", name="The platform's")
    shops = server.add_customer(account="acct_shop", name="The shop's")
    assert "account" not in server.change_customer(own["id"], account="acct_platform", name="Own")
    event = server.change_customer(shops["id"], account="acct_shop", name="Shop")
    assert list(event) == ["id", "object", "account", *EVENT_KEYS[2:]] and event["account"] == "acct_shop"
    assert server.get_customer(shops["id"], "acct_shop")["name"] == "Shop"


# --------------------------------------------------------------------------
# signing


def test_an_event_is_signed_as_stripe_signs_and_the_app_verifies_it(server: FakeStripeServer) -> None:
    event = server.create_customer(name="Ann")
    signed = sign_event(event, SECRET, timestamp=1_800_000_000)
    assert signed.body == json.dumps(event, indent=2).encode()
    assert signed.signature == f"t=1800000000,v1={stripe_signature(signed.body, SECRET, 1_800_000_000)}"
    assert signed.signature == f"t=1800000000,v1={sign(signed.body, SECRET, 1_800_000_000)}"  # the app's sign
    assert signed.headers() == {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        "Stripe-Signature": signed.signature,
    }
    verify(signed.body, signed.signature, SECRET, now=1_800_000_000)
    rolling = sign_event(event, [OLD_SECRET, SECRET], timestamp=1_800_000_000)
    assert rolling.signature == ",".join(
        ["t=1800000000", *(f"v1={stripe_signature(signed.body, s, 1_800_000_000)}" for s in (OLD_SECRET, SECRET))]
    )
    verify(rolling.body, rolling.signature, SECRET, now=1_800_000_000)  # one v1 matching is enough
    unsigned = sign_event(event, [])
    assert unsigned.signature is None and "Stripe-Signature" not in unsigned.headers()
    with pytest.raises(ValueError, match="non-empty string"):
        sign_event(event, "")


# --------------------------------------------------------------------------
# delivery


def test_forward_to_sends_each_event_signed_before_the_change_returns(
    server: FakeStripeServer, receiver: Receiver
) -> None:
    customer = server.add_customer(name="Ann")
    server.forward_to(receiver.url, SECRET)
    event = server.change_customer(customer["id"], name="Bob")
    (delivery,) = server.deliveries
    ((path, headers, body),) = receiver.received
    assert body == json.dumps(event, indent=2).encode() == delivery.body
    assert path == "/stripe/webhook/" and headers["Content-Length"] == str(len(body))
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["User-Agent"] == "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
    assert headers["Stripe-Signature"] == delivery.signature
    timestamp = int(delivery.signature.removeprefix("t=").split(",")[0])
    assert delivery.signature == f"t={timestamp},v1={stripe_signature(body, SECRET, timestamp)}"
    assert (delivery.url, delivery.event_id, delivery.type) == (receiver.url, event["id"], "customer.updated")
    assert (delivery.status, delivery.response, delivery.error, delivery.ok) == (200, b'{"received": true}', None, True)

    server.forward_to(None)
    server.change_customer(customer["id"], name="Cy")
    assert len(server.deliveries) == 1 and len(receiver.received) == 1 and len(server.events) == 2


def test_a_delivery_that_fails_is_recorded_and_the_change_stands(server: FakeStripeServer, receiver: Receiver) -> None:
    customer = server.add_customer(name="Ann")
    receiver.status, receiver.answer = 500, b"site down"
    server.forward_to(receiver.url, SECRET)
    server.change_customer(customer["id"], name="Bob")
    receiver.status, receiver.answer = 302, b""
    server.change_customer(customer["id"], name="Cy")  # a redirect is an answer, not followed
    server.forward_to(f"http://127.0.0.1:{free_port()}/stripe/webhook/", SECRET)  # nothing listens there
    server.change_customer(customer["id"], name="Di")
    answered = [(d.status, d.response, d.ok) for d in server.deliveries]
    assert answered == [(500, b"site down", False), (302, b"", False), (None, b"", False)]
    assert server.deliveries[2].error.startswith("ConnectionRefusedError")
    assert [path for path, _, _ in receiver.received] == ["/stripe/webhook/"] * 2
    assert server.get_customer(customer["id"])["name"] == "Di"


def test_send_event_sends_one_event_once(server: FakeStripeServer, receiver: Receiver) -> None:
    event = server.create_customer(name="Ann")
    assert server.deliveries == [] and receiver.received == []  # nothing forwarded unless asked
    first = server.send_event(event, receiver.url, SECRET)
    again = server.send_event(event, receiver.url, [OLD_SECRET, SECRET])  # a redelivery, as Stripe retries
    assert server.deliveries == [first, again] and first.body == again.body
    assert [headers["Stripe-Signature"].count("v1=") for _, headers, _ in receiver.received] == [1, 2]


@pytest.mark.parametrize(
    ("url", "secret", "message"),
    [
        ("ftp://127.0.0.1/hook", SECRET, "a webhook URL is http://"),
        ("127.0.0.1:8000/hook", SECRET, "a webhook URL is http://"),
        ("http://127.0.0.1:99999/hook", SECRET, "bad port"),
        ("http://127.0.0.1:8000/hook", (), "needs the webhook signing secret"),
        ("http://127.0.0.1:8000/hook", ["whsec_x", ""], "non-empty string"),
    ],
)
def test_forward_to_refuses_what_it_could_not_send(server: FakeStripeServer, url: str, secret, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        server.forward_to(url, secret)


def test_reset_forgets_events_and_deliveries_and_keeps_forwarding(server: FakeStripeServer, receiver: Receiver) -> None:
    server.forward_to(receiver.url, SECRET)
    server.create_customer(name="Ann")
    server.reset()
    assert server.events == [] and server.deliveries == []
    server.create_customer(name="Bob")
    assert len(server.deliveries) == 1 and len(receiver.received) == 2


# --------------------------------------------------------------------------
# the control API


def control(server: FakeStripeServer, method: str, path: str, body: object = None) -> requests.Response:
    data = None if body is None else json.dumps(body)
    return requests.request(method, server.url + path, data=data, headers=control_headers(KEY), timeout=10)


def test_the_control_api_makes_changes_and_lists_their_events_and_deliveries(
    server: FakeStripeServer, receiver: Receiver
) -> None:
    server.add_customer(id="cus_kept", address=LYON)
    assert control(server, "POST", "/_fake/forward", {"url": receiver.url, "secret": SECRET}).json() == {"ok": True}
    updated = control(
        server,
        "POST",
        "/_fake/events",
        {"type": "customer.updated", "customer": "cus_kept", "params": {"address": PARIS}},
    )
    assert updated.status_code == 200
    event = updated.json()
    assert event["data"]["previous_attributes"] == {
        "address": {"line1": "9 Old Street", "city": "Lyon", "postal_code": "69001"}
    }
    created = control(server, "POST", "/_fake/events", {"type": "customer.created", "params": {"name": "New"}}).json()
    deleted = control(server, "POST", "/_fake/events", {"type": "customer.deleted", "customer": "cus_kept"}).json()
    assert control(server, "GET", "/_fake/events").json() == [event, created, deleted] == server.events
    listed = control(server, "GET", "/_fake/deliveries").json()
    assert [d["event"] for d in listed] == [event["id"], created["id"], deleted["id"]]
    assert listed[0] == {
        "url": receiver.url,
        "event": event["id"],
        "type": "customer.updated",
        "body": json.dumps(event, indent=2),
        "signature": server.deliveries[0].signature,
        "status": 200,
        "response": '{"received": true}',
        "error": None,
    }
    assert [body for _, _, body in receiver.received] == [
        json.dumps(e, indent=2).encode() for e in (event, created, deleted)
    ]
    assert control(server, "POST", "/_fake/forward", {"url": None}).json() == {"ok": True}
    control(server, "POST", "/_fake/events", {"type": "customer.created", "params": {}})
    assert len(receiver.received) == 3


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"type": "customer.updated", "customer": "cus_kept", "params": {"tax_exempt": "x"}}, 400, "tax_exempt"),
        ({"type": "customer.updated", "customer": "cus_missing", "params": {}}, 404, "No such customer"),
        ({"type": "customer.updated", "params": {"name": "x"}}, 400, "takes a customer id"),
        ({"type": "customer.created", "customer": "cus_kept"}, 400, "takes no customer"),
        ({"type": "customer.deleted", "customer": "cus_kept", "params": {"name": "x"}}, 400, "takes no params"),
        ({"type": "invoice.paid"}, 400, "type must be one of"),
        ({"type": "customer.created", "secret": "x"}, 400, "unknown field(s) secret"),
        ({"type": "customer.created", "params": ["name"]}, 400, "expected a JSON object"),
    ],
)
def test_the_control_api_refuses_a_change_it_cannot_make(
    server: FakeStripeServer, body, status: int, says: str
) -> None:
    server.add_customer(id="cus_kept", name="Kept")
    response = control(server, "POST", "/_fake/events", body)
    assert response.status_code == status and says in json.dumps(response.json())
    assert server.events == [] and server.get_customer("cus_kept")["name"] == "Kept"


# --------------------------------------------------------------------------
# the command


@pytest.mark.django_db(transaction=True)
def test_the_command_forwards_events_to_a_live_sites_webhook(fake_stripe, settings, live_server) -> None:
    """``python -m customersync.testing --forward-to``: the site's real view takes the event, its owner changes.
    (``fake_stripe`` keeps the broker out of it; the app is pointed at the command's server.)"""
    port = free_port()
    url = f"{live_server.url}/stripe/webhook/"
    site_secret = settings.CUSTOMERSYNC["WEBHOOK_SECRET"]
    command = [sys.executable, "-m", "customersync.testing", "--port", str(port), "--api-key", KEY]
    command += ["--forward-to", url]
    environment = {**_environment(), "STRIPE_WEBHOOK_SECRET": site_secret}
    process = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        lines = Lines(process)
        lines.wait_for(rf"fake-stripe: listening on http://127\.0\.0\.1:{port}$", timeout=20)
        lines.wait_for(rf"fake-stripe: forwarding events to {url}$", timeout=5)
        fake = f"http://127.0.0.1:{port}"
        settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "API_KEY": KEY, "API_BASE": fake}
        owner = make_owner(**{field("address[line1]"): "9 Old Street", field("address[city]"): "Lyon"})
        customer = sync.get_or_create_for(owner, wait=True)  # made in the command's server by the app

        change = {"type": "customer.updated", "customer": customer.stripe_id, "params": {"address": PARIS}}
        answer = requests.post(f"{fake}/_fake/events", json=change, headers=control_headers(KEY), timeout=30)
        assert answer.status_code == 200, answer.text
        event = answer.json()
        # Forwarded before the control request was answered: the site's answer is there already.
        (delivery,) = requests.get(f"{fake}/_fake/deliveries", headers=control_headers(KEY), timeout=10).json()
        assert (delivery["url"], delivery["status"], json.loads(delivery["response"])) == (
            url,
            200,
            {"outcome": "applied"},
        )
        assert delivery["body"] == json.dumps(event, indent=2)
        verify(delivery["body"].encode(), delivery["signature"], site_secret)
        lines.wait_for(rf"fake-stripe: --> customer\.updated {event['id']} {url} 200$", timeout=5)
        owner.refresh_from_db()
        assert {p: getattr(owner, field(f"address[{p}]")) for p in PARIS} == PARIS
    finally:
        process.terminate()
        process.wait(timeout=10)


def _environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "STRIPE_WEBHOOK_SECRET"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--forward-to", "http://127.0.0.1:8000/stripe/webhook/"], "needs the site's webhook signing secret"),
        (["--webhook-secret", SECRET], "--webhook-secret has no effect without --forward-to"),
        (["--forward-to", "ftp://127.0.0.1/x", "--webhook-secret", SECRET], "a webhook URL is http://"),
    ],
)
def test_the_command_refuses_forwarding_it_could_not_do(arguments: list[str], message: str) -> None:
    command = [sys.executable, "-m", "customersync.testing", "--port", "0", *arguments]
    result = subprocess.run(command, cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=10)
    assert result.returncode == 2 and message in result.stderr, result.stderr
