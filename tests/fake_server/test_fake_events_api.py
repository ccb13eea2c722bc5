"""The fake server's events log and ``GET /v1/events``, as Stripe documents them.

Every change to a customer is an event in its account's log, made through the API (its
``request`` names the request's ``Request-Id`` and ``Idempotency-Key``) or in Stripe (the kit).
``GET /v1/events`` lists them newest first with Stripe's filters and cursors, within the
retention window; deliveries to the site can be held (an outage) and resumed. Plain pytest,
over real HTTP with requests; the webhook endpoint is a receiver of the test's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
import requests

from customersync.testing import FakeStripeServer, control_headers
from tests.fake_server.test_fake_webhooks import Receiver

KEY = "sk_test_" + "events0api0tests"
SECRET = "whsec_" + "events0api0tests"
PLATFORM = "acct_1EventsPlatform0"
CONNECTED = "acct_1EventsConnected"
PLATFORM_KEY = "sk_test_" + "events0platform0key"


@pytest.fixture
def server() -> Iterator[FakeStripeServer]:
    with FakeStripeServer(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


def api(
    server: FakeStripeServer, method: str, path: str, params: Any = None, headers: dict[str, str] | None = None
) -> requests.Response:
    sent = {"Authorization": f"Bearer {KEY}", **(headers or {})}
    if method == "GET":
        return requests.get(server.url + path, params=params, headers=sent, timeout=10)
    return requests.request(method, server.url + path, data=params, headers=sent, timeout=10)


def events(server: FakeStripeServer, params: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    answer = api(server, "GET", "/v1/events", params, headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def ids(page: dict[str, Any]) -> list[str]:
    return [event["id"] for event in page["data"]]


def make_events(server: FakeStripeServer, count: int) -> list[str]:
    """``count`` events, oldest first: one customer created, then updated."""
    made = [server.create_customer(name="v0")]
    customer = made[0]["data"]["object"]["id"]
    made += [server.change_customer(customer, name=f"v{n}") for n in range(1, count)]
    return [event["id"] for event in made]


def control(server: FakeStripeServer, method: str, path: str, body: object = None) -> requests.Response:
    data = None if body is None else json.dumps(body)
    return requests.request(method, server.url + path, data=data, headers=control_headers(KEY), timeout=10)


# --------------------------------------------------------------------------
# the log


def test_changes_made_through_the_api_are_logged_naming_their_request(server: FakeStripeServer) -> None:
    created = api(server, "POST", "/v1/customers", {"name": "Ann"}, {"Idempotency-Key": "create-ann"})
    customer = created.json()
    updated = api(
        server, "POST", f"/v1/customers/{customer['id']}", {"email": "ann@example.com"}, {"Idempotency-Key": "upd-1"}
    )
    replayed = api(
        server, "POST", f"/v1/customers/{customer['id']}", {"email": "ann@example.com"}, {"Idempotency-Key": "upd-1"}
    )
    unchanged = api(server, "POST", f"/v1/customers/{customer['id']}", {"email": "ann@example.com"})
    deleted = api(server, "DELETE", f"/v1/customers/{customer['id']}")
    assert [r.status_code for r in (created, updated, replayed, unchanged, deleted)] == [200] * 5
    assert replayed.headers["Idempotent-Replayed"] == "true"
    page = events(server)
    # Newest first; a replay and an update that changes nothing make no event.
    assert [e["type"] for e in page["data"]] == ["customer.deleted", "customer.updated", "customer.created"]
    gone, update, made = page["data"]
    assert made["request"] == {"id": created.headers["Request-Id"], "idempotency_key": "create-ann"}
    assert update["request"] == {"id": updated.headers["Request-Id"], "idempotency_key": "upd-1"}
    assert gone["request"] == {"id": deleted.headers["Request-Id"], "idempotency_key": None}
    assert made["data"] == {"object": customer}
    assert update["data"] == {"object": updated.json(), "previous_attributes": {"email": None}}
    assert gone["data"] == {"object": updated.json()}  # the customer as it was
    for event in page["data"]:
        assert (event["object"], event["livemode"], event["pending_webhooks"]) == ("event", False, 0)
        assert event["api_version"] and "account" not in event
    assert [e["id"] for e in server.events] == ids(page)[::-1]


def test_changes_made_in_stripe_and_through_the_api_share_one_log(server: FakeStripeServer) -> None:
    kit = server.create_customer(name="Ann")
    answer = api(server, "POST", f"/v1/customers/{kit['data']['object']['id']}", {"name": "Bo"})
    (through_api,) = [e for e in server.events if e["type"] == "customer.updated"]
    assert ids(events(server)) == [through_api["id"], kit["id"]]
    assert through_api["request"]["id"] == answer.headers["Request-Id"] != kit["request"]["id"]


def test_a_refused_change_makes_no_event(server: FakeStripeServer) -> None:
    customer = server.add_customer(name="Ann")
    assert api(server, "POST", f"/v1/customers/{customer['id']}", {"tax_exempt": "x"}).status_code == 400
    assert api(server, "DELETE", "/v1/customers/cus_missing").status_code == 404
    assert server.events == [] and events(server)["data"] == []


def test_events_made_in_the_same_second_list_in_the_order_they_were_made(server: FakeStripeServer) -> None:
    made = make_events(server, 30)
    listed = events(server, {"limit": 100})
    assert ids(listed) == made[::-1] and listed["has_more"] is False
    stamps = [event["created"] for event in listed["data"]]
    assert stamps == sorted(stamps, reverse=True)


def test_retrieve_one_event(server: FakeStripeServer) -> None:
    made = server.create_customer(name="Ann")
    answer = api(server, "GET", f"/v1/events/{made['id']}")
    assert answer.status_code == 200 and answer.json() == made
    missing = api(server, "GET", "/v1/events/evt_missing")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "message": "No such event: 'evt_missing'",
            "param": "id",
        }
    }


# --------------------------------------------------------------------------
# listing and paging


def test_the_list_is_newest_first_ten_by_default(server: FakeStripeServer) -> None:
    made = make_events(server, 12)
    page = events(server)
    assert (page["object"], page["url"], page["has_more"]) == ("list", "/v1/events", True)
    assert ids(page) == made[::-1][:10]
    assert ids(events(server, {"limit": 12})) == made[::-1] and events(server, {"limit": 12})["has_more"] is False


def test_starting_after_walks_toward_the_oldest(server: FakeStripeServer) -> None:
    made = make_events(server, 7)
    first = events(server, {"limit": 3})
    second = events(server, {"limit": 3, "starting_after": ids(first)[-1]})
    third = events(server, {"limit": 3, "starting_after": ids(second)[-1]})
    assert [ids(first), ids(second), ids(third)] == [made[6:3:-1], made[3:0:-1], [made[0]]]
    assert [first["has_more"], second["has_more"], third["has_more"]] == [True, True, False]


def test_ending_before_walks_toward_the_newest_each_page_newest_first(server: FakeStripeServer) -> None:
    made = make_events(server, 7)
    first = events(server, {"limit": 3, "ending_before": made[0]})
    second = events(server, {"limit": 3, "ending_before": ids(first)[0]})
    third = events(server, {"limit": 3, "ending_before": ids(second)[0]})
    # The events just newer than the cursor, newest first; has_more: newer ones remain.
    assert [ids(first), ids(second), ids(third)] == [made[3:0:-1], made[6:3:-1], []]
    assert [first["has_more"], second["has_more"], third["has_more"]] == [True, False, False]
    assert ids(events(server, {"ending_before": made[6]})) == []


def test_type_filters_with_a_wildcard_and_types(server: FakeStripeServer) -> None:
    created = server.create_customer(name="Ann")
    customer = created["data"]["object"]["id"]
    updated = server.change_customer(customer, name="Bo")
    deleted = server.remove_customer(customer)
    assert ids(events(server, {"type": "customer.updated"})) == [updated["id"]]
    assert ids(events(server, {"type": "customer.*"})) == [deleted["id"], updated["id"], created["id"]]
    assert ids(events(server, {"type": "*.deleted"})) == [deleted["id"]]
    assert ids(events(server, {"type": "invoice.*"})) == []
    wanted = {"types[]": ["customer.created", "customer.deleted"]}
    assert ids(events(server, wanted)) == [deleted["id"], created["id"]]
    numbered = {"types[0]": "customer.updated", "types[1]": "invoice.paid"}  # as stripe-python sends a list
    assert ids(events(server, numbered)) == [updated["id"]]


def test_filters_apply_across_pages(server: FakeStripeServer) -> None:
    made = make_events(server, 6)  # one customer.created, then five customer.updated
    page = events(server, {"type": "customer.updated", "limit": 2, "starting_after": made[4]})
    assert ids(page) == [made[3], made[2]] and page["has_more"] is True
    page = events(server, {"type": "customer.created", "ending_before": made[5]})
    assert ids(page) == [] and page["has_more"] is False


def test_created_filters(server: FakeStripeServer) -> None:
    made = []
    for step in range(4):
        made.append(server.create_customer(name=f"c{step}"))
        server.advance_clock(10)
    stamps = [event["created"] for event in made]
    assert all(later - earlier >= 10 for earlier, later in pairwise(stamps))  # 10 on the clock, more if a second passed
    first, second, third, fourth = (event["id"] for event in made)
    assert ids(events(server, {"created": str(stamps[1])})) == [second]
    assert ids(events(server, {"created[gt]": str(stamps[1])})) == [fourth, third]
    assert ids(events(server, {"created[gte]": str(stamps[1])})) == [fourth, third, second]
    assert ids(events(server, {"created[lt]": str(stamps[2])})) == [second, first]
    assert ids(events(server, {"created[lte]": str(stamps[2])})) == [third, second, first]
    assert ids(events(server, {"created[gt]": str(stamps[0]), "created[lt]": str(stamps[3])})) == [third, second]


# --------------------------------------------------------------------------
# delivery: held and resumed


def test_held_deliveries_are_pending_and_resume_sends_them_in_order(
    server: FakeStripeServer, receiver: Receiver
) -> None:
    server.forward_to(receiver.url, SECRET)
    before = server.create_customer(name="Ann")
    customer = before["data"]["object"]["id"]
    server.hold_deliveries()
    held = [server.change_customer(customer, name=f"n{n}") for n in range(3)]
    assert len(receiver.received) == 1 and [d.event_id for d in server.deliveries] == [before["id"]]
    pending = events(server, {"delivery_success": "false"})
    assert ids(pending) == [e["id"] for e in held][::-1]
    assert {e["pending_webhooks"] for e in pending["data"]} == {1}
    assert ids(events(server, {"delivery_success": "true"})) == [before["id"]]

    sent = server.resume_deliveries()
    assert [d.event_id for d in sent] == [e["id"] for e in held] and all(d.ok for d in sent)
    assert [json.loads(body)["id"] for _, _, body in receiver.received] == [before["id"], *(e["id"] for e in held)]
    assert events(server, {"delivery_success": "false"})["data"] == []
    assert {e["pending_webhooks"] for e in events(server)["data"]} == {0}
    after = server.change_customer(customer, name="sent at once")  # no longer held
    assert server.deliveries[-1].event_id == after["id"] and server.resume_deliveries() == []


def test_an_event_the_site_refuses_stays_pending_until_a_resume_delivers_it(
    server: FakeStripeServer, receiver: Receiver
) -> None:
    server.forward_to(receiver.url, SECRET)
    receiver.status = 500
    refused = server.create_customer(name="Ann")
    assert ids(events(server, {"delivery_success": "false"})) == [refused["id"]]
    assert [d.ok for d in server.resume_deliveries()] == [False]  # still down: still pending
    receiver.status = 200
    assert [(d.event_id, d.ok) for d in server.resume_deliveries()] == [(refused["id"], True)]
    assert ids(events(server, {"delivery_success": "true"})) == [refused["id"]]


def test_an_event_with_no_endpoint_to_wait_for_counts_as_delivered(server: FakeStripeServer) -> None:
    made = server.create_customer(name="Ann")  # no forward_to URL
    server.hold_deliveries()
    assert api(server, "POST", "/v1/customers", {"name": "Bo"}).status_code == 200  # the fake forwards kit changes only
    (through_api,) = [event["id"] for event in server.events if event["id"] != made["id"]]
    assert ids(events(server, {"delivery_success": "true"})) == [through_api, made["id"]]
    assert events(server, {"delivery_success": "false"})["data"] == []
    assert server.resume_deliveries() == []


# --------------------------------------------------------------------------
# retention and the clock


def test_events_older_than_the_retention_window_are_gone(server: FakeStripeServer) -> None:
    old = server.create_customer(name="Old")
    server.advance_clock(30 * 24 * 3600 - 1)
    kept = server.create_customer(name="Kept")
    assert ids(events(server)) == [kept["id"], old["id"]]
    server.advance_clock(1)  # the first is 30 days old
    assert ids(events(server)) == [kept["id"]]
    assert api(server, "GET", f"/v1/events/{old['id']}").status_code == 404
    beyond = api(server, "GET", "/v1/events", {"starting_after": old["id"]})
    assert beyond.status_code == 400
    assert beyond.json()["error"] == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "message": f"No such event: '{old['id']}'",
        "param": "starting_after",
    }
    assert api(server, "GET", "/v1/events", {"ending_before": old["id"]}).json()["error"]["param"] == "ending_before"
    assert len(server.events) == 2  # the Python API still shows every event made


def test_a_test_shortens_the_retention_window(server: FakeStripeServer) -> None:
    old = server.create_customer(name="Old")
    server.set_event_retention(60)
    server.advance_clock(60)
    new = server.create_customer(name="New")
    assert ids(events(server)) == [new["id"]]
    server.set_event_retention(None)  # Stripe's 30 days
    assert ids(events(server)) == [new["id"], old["id"]]
    with pytest.raises(ValueError, match="retention"):
        server.set_event_retention(0)
    with pytest.raises(ValueError, match="forward"):
        server.advance_clock(-1)


def test_reset_forgets_events_and_restores_the_clock_retention_and_delivery(server: FakeStripeServer) -> None:
    server.create_customer(name="Ann")
    server.set_event_retention(5)
    server.advance_clock(3600)
    server.hold_deliveries()
    server.reset()
    assert server.events == [] and abs(server.clock() - int(time.time())) <= 1
    made = server.create_customer(name="Bo")
    server.advance_clock(3600)  # within 30 days
    assert ids(events(server)) == [made["id"]]


# --------------------------------------------------------------------------
# accounts


def test_each_account_lists_its_own_events(server: FakeStripeServer) -> None:
    server.add_platform(PLATFORM, [PLATFORM_KEY], connected=[CONNECTED])
    as_platform = {"Authorization": f"Bearer {PLATFORM_KEY}"}
    as_connected = {**as_platform, "Stripe-Context": CONNECTED}
    own = requests.post(f"{server.url}/v1/customers", data={"name": "P"}, headers=as_platform, timeout=10)
    theirs = requests.post(
        f"{server.url}/v1/customers", data={"name": "C"}, headers={**as_connected, "Idempotency-Key": "c-1"}, timeout=10
    )
    kit = server.create_customer(name="K", account=CONNECTED)
    mine = events(server, headers=as_platform)["data"]
    connected = events(server, headers=as_connected)["data"]
    assert [e["data"]["object"]["id"] for e in mine] == [own.json()["id"]] and "account" not in mine[0]
    assert [e["id"] for e in connected] == [kit["id"], connected[1]["id"]]
    assert connected[1]["data"]["object"] == theirs.json() and connected[1]["request"]["idempotency_key"] == "c-1"
    assert {e["account"] for e in connected} == {CONNECTED}
    answer = requests.get(f"{server.url}/v1/events/{kit['id']}", headers=as_platform, timeout=10)
    assert answer.status_code == 404  # the connected account's, not the platform's
    cursor = requests.get(
        f"{server.url}/v1/events", params={"starting_after": kit["id"]}, headers=as_platform, timeout=10
    )
    assert cursor.status_code == 400
    server.forget_platforms()


# --------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("params", "param", "says"),
    [
        ({"limit": "0"}, "limit", "Invalid limit: must be between 1 and 100"),
        ({"limit": "101"}, "limit", "Invalid limit: must be between 1 and 100"),
        ({"limit": "ten"}, "limit", "Invalid integer: ten"),
        ({"type": "customer.created", "types[]": ["customer.updated"]}, "types", "either type or types"),
        ({"types[]": [f"customer.t{n}" for n in range(21)]}, "types", "at most 20"),
        ({"created": "soon"}, "created", "Invalid integer: soon"),
        ({"created[gt]": "soon"}, "created[gt]", "Invalid integer: soon"),
        ({"created[after]": "1"}, "created", "Invalid created"),
        ({"delivery_success": "maybe"}, "delivery_success", "Invalid boolean: maybe"),
        ({"starting_after": "evt_a", "ending_before": "evt_b"}, "ending_before", "only specify one"),
        ({"starting_after": "evt_missing"}, "starting_after", "No such event: 'evt_missing'"),
        ({"customer": "cus_1"}, "customer", "Received unknown parameter: customer"),
    ],
)
def test_bad_params_get_stripes_400(server: FakeStripeServer, params: dict[str, Any], param: str, says: str) -> None:
    server.create_customer(name="Ann")
    answer = api(server, "GET", "/v1/events", params)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param) and says in error["message"]


def test_twenty_types_are_taken(server: FakeStripeServer) -> None:
    made = server.create_customer(name="Ann")
    wanted = ["customer.created", *(f"customer.t{n}" for n in range(19))]
    assert ids(events(server, {"types[]": wanted})) == [made["id"]]


def test_events_are_read_only_and_need_a_key(server: FakeStripeServer) -> None:
    answer = api(server, "POST", "/v1/events", {"type": "customer.created"})
    assert answer.status_code == 404 and "Unrecognized request URL" in answer.json()["error"]["message"]
    unauthenticated = requests.get(f"{server.url}/v1/events", timeout=10)
    assert unauthenticated.status_code == 401


# --------------------------------------------------------------------------
# the control API


def test_the_control_api_holds_resumes_sets_retention_and_the_clock(
    server: FakeStripeServer, receiver: Receiver
) -> None:
    assert control(server, "POST", "/_fake/forward", {"url": receiver.url, "secret": SECRET}).json() == {"ok": True}
    assert control(server, "POST", "/_fake/deliveries/hold").json() == {"ok": True}
    held = control(server, "POST", "/_fake/events", {"type": "customer.created", "params": {"name": "Ann"}}).json()
    assert receiver.received == [] and ids(events(server, {"delivery_success": "false"})) == [held["id"]]
    (sent,) = control(server, "POST", "/_fake/deliveries/resume").json()
    assert (sent["event"], sent["status"]) == (held["id"], 200) and len(receiver.received) == 1

    now = control(server, "GET", "/_fake/clock").json()["clock"]
    assert abs(now - server.clock()) <= 1
    assert control(server, "POST", "/_fake/event_retention", {"seconds": 100}).json() == {"ok": True}
    moved = control(server, "POST", "/_fake/clock", {"seconds": 100}).json()["clock"]
    assert moved - now in (100, 101) and events(server)["data"] == []
    assert control(server, "POST", "/_fake/event_retention", {"seconds": None}).json() == {"ok": True}
    assert ids(events(server)) == [held["id"]]
    refused = control(server, "POST", "/_fake/clock", {"seconds": -5})
    assert refused.status_code == 400 and "forward" in refused.json()["error"]["message"]
