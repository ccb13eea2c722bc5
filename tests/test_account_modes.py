"""Test and live mode: a key never writes to a customer Stripe reported in the other mode.

A key's mode is its prefix (``sk_test_``, ``rk_live_``...); a customer's is the
``livemode`` Stripe last reported (``stripe_data``). A push across modes is
refused before any request, which the fake server's request log shows; a
customer Stripe never confirmed is created in the key's mode. The system checks
report the platforms' settings, and with ``check --database default`` the
accounts and customers that do not fit them.

Live keys are built at run time: no live-looking literal in the source.
"""

from __future__ import annotations

import secrets

import pytest
from celery.result import AsyncResult
from django.conf import settings as django_settings
from django.urls import reverse
from django.utils.html import escape

from customersync import sync
from customersync.models import Account, Customer, PendingPush, PushAttempt, PushState, SyncStatus
from tests.conftest import wait_for_tasks
from tests.support import current_app
from tests.test_e2e import mirrored

DEFAULT_SETTING = "CUSTOMERSYNC['API_KEY']"
EU_SETTING = "CUSTOMERSYNC['PLATFORMS']['eu']['API_KEY']"


def key_in(mode: str, kind: str = "sk") -> str:
    """A new secret (``sk``) or restricted (``rk``) key of ``mode``, ``"test"`` or ``"live"``."""
    return "_".join((kind, mode, secrets.token_hex(12)))


def reported_in(customer: Customer, livemode: bool) -> None:
    """As if Stripe's last answer for the customer said ``livemode``."""
    data = {**customer.stripe_data, "livemode": livemode}
    Customer.objects.filter(pk=customer.pk).update(stripe_data=data, livemode=livemode)


def configure(settings, **changes) -> None:
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, **changes}


def edited(customer: Customer) -> Customer:
    customer = Customer.objects.get(pk=customer.pk)
    customer.name = "Bob"
    customer.save()
    return customer


def assert_refused(customer: Customer, setting: str, customer_mode: str, key_mode: str) -> None:
    """Failed with the mode error, the outbox record given up, and no request in the sync log."""
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.FAILED
    error = customer.sync_error
    assert (error["code"], error["param"], error["type"]) == ("livemode_mismatch", "livemode", "local_error")
    assert setting in error["message"], error["message"]
    assert f"a {customer_mode}-mode customer" in error["message"] and f"a {key_mode}-mode key" in error["message"]
    assert "nothing was sent" in error["message"]
    record = PendingPush.objects.get(customer=customer)
    assert record.state == PushState.FAILED and record.completed_at is not None
    assert not PushAttempt.objects.filter(customer=customer).exists()  # one row per request: none
    assert customer.name == "Bob"  # the edit is kept, to push once the customer is in the right account


# (case, the customer's platform (None: default), its key, the customer's mode as Stripe reported it,
#  the setting the message names, the modes it names)
REFUSALS = [
    ("test key, live customer", None, key_in("test"), True, DEFAULT_SETTING, "live", "test"),
    ("live key, test customer", None, key_in("live"), False, DEFAULT_SETTING, "test", "live"),
    ("restricted live key, test customer", None, key_in("live", "rk"), False, DEFAULT_SETTING, "test", "live"),
    ("platform's live key, test customer", "eu", key_in("live"), False, EU_SETTING, "test", "live"),
    ("platform's restricted test key, live customer", "eu", key_in("test", "rk"), True, EU_SETTING, "live", "test"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("platform, key, livemode, setting, customer_mode, key_mode", [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])  # fmt: skip
def test_push_across_modes_is_refused_before_any_request(
    stripe, settings, platform, key, livemode, setting, customer_mode, key_mode
):
    customer = mirrored(stripe, name="Ann")  # with the session's test key
    reported_in(customer, livemode)
    if platform:
        configure(settings, PLATFORMS={platform: {"API_KEY": key}})
        Customer.objects.filter(pk=customer.pk).update(account=Account.objects.create(platform=platform))
    else:
        configure(settings, API_KEY=key)
    customer = edited(customer)
    stripe.clear_requests()

    result = sync.push(customer.pk)

    assert result.outcome is sync.Outcome.FAILED and result.error["code"] == "livemode_mismatch"
    assert stripe.requests == [] and stripe.wait_for_arrivals(0) == []
    assert_refused(customer, setting, customer_mode, key_mode)
    assert stripe.get_customer(customer.stripe_id)["name"] == "Ann"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_worker_refuses_a_live_customer_with_the_test_key(stripe, start_worker, published_tasks):
    customer = mirrored(stripe, name="Ann")
    reported_in(customer, True)
    stripe.clear_requests()
    start_worker()  # the test settings' key: sk_test_...
    customer = edited(customer)
    wait_for_tasks(published_tasks)

    assert [AsyncResult(i, app=current_app()).result for i in published_tasks] == ["failed"]
    assert stripe.requests == [] and stripe.wait_for_arrivals(0) == []
    assert_refused(customer, DEFAULT_SETTING, "live", "test")


@pytest.mark.django_db
def test_the_refusal_shows_on_the_admin_change_page(stripe, client, admin_user):
    customer = mirrored(stripe, name="Ann")
    reported_in(customer, True)
    customer = edited(customer)
    sync.push(customer.pk)
    customer.refresh_from_db()
    client.force_login(admin_user)

    page = client.get(reverse("admin:customersync_customer_change", args=[customer.pk])).content.decode()

    assert f"<dd>{escape(customer.sync_error['message'])}</dd>" in page
    assert "<dd>livemode</dd>" in page and "<dd>livemode_mismatch</dd>" in page
    assert escape(DEFAULT_SETTING) in page  # the message names what to look at
    listing = client.get(reverse("admin:customersync_customer_changelist")).content.decode()
    assert "customersync-failed" in listing and "(livemode)" in listing


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["test", "live"])
def test_a_customer_stripe_never_confirmed_is_created_in_the_keys_mode(stripe, settings, mode):
    key = key_in("live") if mode == "live" else key_in("test")
    stripe.set_api_key(key)  # the fake server answers only this key now
    try:
        configure(settings, API_KEY=key)
        customer = Customer.objects.create(name="New", email="new@example.com")
        assert customer.stripe_data is None

        result = sync.push(customer.pk)
    finally:
        stripe.set_api_key(django_settings.TEST_API_KEY)

    assert result.outcome is sync.Outcome.PUSHED, result.error
    (create,) = stripe.requests
    assert (create.method, create.path, create.status) == ("POST", "/v1/customers", 200)
    assert create.headers["Authorization"] == f"Bearer {key}"
    customer.refresh_from_db()
    assert (customer.sync_status, customer.sync_error) == (SyncStatus.IN_SYNC, None)
    assert stripe.get_customer(customer.stripe_id)["email"] == "new@example.com"
    if mode == "test":
        # The fake server is Stripe's test mode only: its customers say livemode false.
        assert customer.stripe_data["livemode"] is False and customer.livemode is False
