"""Webhooks of several accounts: one endpoint per platform and one for its Connect events, each
signed with its own secret, each reaching only its own account's customers."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from django.urls import reverse

from customersync.models import Account, Customer, WebhookEvent
from customersync.pull.pages import PullStats, store_page

pytestmark = pytest.mark.django_db

SAME_ID = "cus_SameIdEverywhere"  # one id, four accounts, four customers
SECRETS = {
    ("default", False): "whsec_test_secret",  # tests/settings.py
    ("default", True): "whsec_default_connect",
    ("eu", False): "whsec_eu_account",
    ("eu", True): "whsec_eu_connect",
}


def sign(payload: bytes, secret: str) -> str:
    """A Stripe-Signature header computed here, independently of the app's code."""
    timestamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def url(platform: str, connect: bool) -> str:
    if platform == "default":
        return reverse("customersync:webhook-connect" if connect else "customersync:webhook")
    name = "customersync:platform-webhook-connect" if connect else "customersync:platform-webhook"
    return reverse(name, kwargs={"platform": platform})


def event(name: str, *, account: str | None = None, event_id: str, livemode: bool = False) -> dict:
    obj = {
        "id": SAME_ID,
        "object": "customer",
        "name": name,
        "email": "a@example.com",
        "livemode": livemode,
        "created": 1700000000,
        "metadata": {},
    }
    found = {
        "id": event_id,
        "object": "event",
        "type": "customer.updated",
        "created": int(time.time()) + 5,
        "livemode": livemode,
        "data": {"object": obj},
        "request": {"id": None, "idempotency_key": None},
    }
    if account is not None:
        found["account"] = account
    return found


def post(client, platform: str, connect: bool, payload: dict, secret: str | None = None):
    body = json.dumps(payload).encode()
    header = sign(body, secret or SECRETS[(platform, connect)])
    return client.post(url(platform, connect), body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)


@pytest.fixture
def accounts(settings):
    settings.CUSTOMERSYNC = {
        **settings.CUSTOMERSYNC,
        "CONNECT_WEBHOOK_SECRET": SECRETS[("default", True)],
        "PLATFORMS": {
            "eu": {
                "API_KEY": "sk_test_eu_platform",
                "WEBHOOK_SECRET": SECRETS[("eu", False)],
                "CONNECT_WEBHOOK_SECRET": SECRETS[("eu", True)],
            }
        },
    }
    found = {
        "default": None,
        "eu": Account.objects.create(platform="eu", name="EU"),
        "default/acct_A": Account.objects.create(platform="default", stripe_account="acct_A"),
        "eu/acct_B": Account.objects.create(platform="eu", stripe_account="acct_B"),
    }
    for label, account in found.items():
        obj = {"id": SAME_ID, "object": "customer", "name": f"Ann of {label}", "livemode": False, "created": 1700000000}
        store_page([obj], PullStats(), account=account)
    return found


def names() -> dict[str, str]:
    label = {None: "default"}
    label.update(
        {a.pk: f"{a.platform}/{a.stripe_account}" if a.stripe_account else a.platform for a in Account.objects.all()}
    )
    return {label[c.account_id]: c.name for c in Customer.objects.filter(stripe_id=SAME_ID)}


ENDPOINTS = [
    ("default", False, None, "default"),
    ("default", True, "acct_A", "default/acct_A"),
    ("eu", False, None, "eu"),
    ("eu", True, "acct_B", "eu/acct_B"),
]


@pytest.mark.parametrize("platform, connect, account, label", ENDPOINTS, ids=[e[3] for e in ENDPOINTS])
def test_each_endpoint_reaches_only_its_own_accounts_customer(client, accounts, platform, connect, account, label):
    assert Customer.objects.filter(stripe_id=SAME_ID).count() == 4
    before = names()
    response = post(
        client, platform, connect, event("Changed", account=account, event_id=f"evt_{label.replace('/', '_')}")
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"outcome": "applied"}
    assert names() == {**before, label: "Changed"}


@pytest.mark.parametrize("platform, connect, account, label", ENDPOINTS, ids=[e[3] for e in ENDPOINTS])
def test_another_endpoints_secret_is_refused_and_writes_nothing(client, accounts, platform, connect, account, label):
    before = names()
    for other, secret in SECRETS.items():
        if other == (platform, connect):
            continue
        response = post(client, platform, connect, event("Forged", account=account, event_id="evt_x"), secret)
        assert response.status_code == 400, (other, response.content)
        assert b"signature" in response.content.lower()
    assert names() == before and not WebhookEvent.objects.exists()


def test_a_connect_event_at_an_account_endpoint_and_the_reverse_are_refused(client, accounts):
    before = names()
    wrong = post(client, "eu", False, event("X", account="acct_B", event_id="evt_1"))
    assert wrong.status_code == 400 and wrong.content.decode().startswith("account: an event of a connected account")
    missing = post(client, "eu", True, event("X", event_id="evt_2"))
    assert missing.status_code == 400 and missing.content.decode().startswith("account: a Connect endpoint's event")
    assert names() == before
    recorded = WebhookEvent.objects.order_by("pk").values_list("event_id", "platform", "stripe_account", "outcome")
    assert list(recorded) == [("evt_1", "eu", "acct_B", "refused"), ("evt_2", "eu", "", "refused")]


def test_a_connect_event_of_an_account_not_mirrored_is_ignored(client, accounts):
    before = names()
    response = post(client, "eu", True, event("X", account="acct_Unknown", event_id="evt_1"))
    assert response.status_code == 200 and response.json() == {"outcome": "ignored: account not mirrored"}
    # acct_A is the default platform's, not eu's: not mirrored under eu either.
    response = post(client, "eu", True, event("X", account="acct_A", event_id="evt_2"))
    assert response.json() == {"outcome": "ignored: account not mirrored"}
    assert names() == before and not Customer.objects.filter(stripe_id=SAME_ID, name="X").exists()


def test_an_event_of_the_other_mode_is_refused(client, accounts):
    before = names()
    response = post(client, "eu", False, event("Live", event_id="evt_1", livemode=True))
    assert response.status_code == 400
    assert response.content.decode() == (
        "livemode: a live-mode event at an endpoint whose platform key is in test mode."
    )
    assert names() == before
    (recorded,) = WebhookEvent.objects.all()
    assert (recorded.platform, recorded.outcome) == ("eu", "refused")
    assert recorded.detail == response.content.decode()


def test_a_rolled_secret_accepts_both_until_the_old_one_is_dropped(client, accounts, settings):
    eu = settings.CUSTOMERSYNC["PLATFORMS"]["eu"]
    old, new = SECRETS[("eu", False)], "whsec_eu_account_rolled"
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PLATFORMS": {"eu": {**eu, "WEBHOOK_SECRET": [new, old]}}}
    assert post(client, "eu", False, event("By old", event_id="evt_1"), old).status_code == 200
    assert post(client, "eu", False, event("By new", event_id="evt_2"), new).status_code == 200
    assert names()["eu"] == "By new"
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PLATFORMS": {"eu": {**eu, "WEBHOOK_SECRET": new}}}
    assert post(client, "eu", False, event("By old again", event_id="evt_3"), old).status_code == 400
    assert names()["eu"] == "By new"


def test_an_unknown_platform_is_a_404(client, accounts):
    body = json.dumps(event("X", event_id="evt_1")).encode()
    response = client.post(
        reverse("customersync:platform-webhook", kwargs={"platform": "nowhere"}),
        body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body, SECRETS[("eu", False)]),
    )
    assert response.status_code == 404 and not WebhookEvent.objects.exists()


# (platform, connect, the setting the log names): endpoints of a platform that has no secret for them
UNSET = [
    ("default", True, "CUSTOMERSYNC['CONNECT_WEBHOOK_SECRET']"),
    ("eu", True, "CUSTOMERSYNC['PLATFORMS']['eu']['CONNECT_WEBHOOK_SECRET']"),
    ("eu", False, "CUSTOMERSYNC['PLATFORMS']['eu']['WEBHOOK_SECRET']"),
]
# (body, Stripe-Signature): junk, unsigned, or signed with a secret the endpoint does not have
JUNK = {
    "unsigned-junk": (b"\x00\xffnot json at all", None),
    "unsigned-event": (json.dumps(event("Forged", account="acct_B", event_id="evt_junk")).encode(), None),
    "garbage-header": (b"{}", "t=\u00b2,v1=zz"),
    "signed-by-another-endpoint": (json.dumps(event("Forged", account="acct_B", event_id="evt_junk")).encode(), "eu"),
}


@pytest.mark.parametrize(
    "platform, connect, setting", UNSET, ids=[f"{u[0]}-{'connect' if u[1] else 'account'}" for u in UNSET]
)
@pytest.mark.parametrize("body, header", JUNK.values(), ids=JUNK.keys())
def test_junk_to_an_endpoint_without_its_secret_is_a_400_naming_no_secret(
    client, settings, accounts, caplog, platform, connect, setting, body, header
):
    eu = {k: v for k, v in settings.CUSTOMERSYNC["PLATFORMS"]["eu"].items() if "SECRET" not in k}
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "CONNECT_WEBHOOK_SECRET": None, "PLATFORMS": {"eu": eu}}
    if header == "eu":
        header = sign(body, SECRETS[("eu", True)])
    before = names()
    extra = {} if header is None else {"HTTP_STRIPE_SIGNATURE": header}
    response = client.post(url(platform, connect), body, content_type="application/json", **extra)
    assert response.status_code == 400, response.content
    assert response.content.decode() == "No signing secret is set for this endpoint."
    assert names() == before and not WebhookEvent.objects.exists()
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert setting in record.getMessage()
    assert not any(secret in record.getMessage() for secret in SECRETS.values())
