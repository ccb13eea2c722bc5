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

import json
import secrets

import pytest
from celery.result import AsyncResult
from django.conf import settings as django_settings
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.urls import reverse
from django.utils.html import escape

from customersync import sync
from customersync.models import Account, Customer, PendingPush, PushAttempt, PushState, SyncStatus
from tests.conftest import wait_for_tasks
from tests.e2e.test_e2e import mirrored
from tests.private_services import PrivatePostgres
from tests.support import current_app, run_django

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
@pytest.mark.parametrize(
    "platform, key, livemode, setting, customer_mode, key_mode", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
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


# -- system checks -------------------------------------------------------------------------------

PLATFORM_IDS = ("customersync.E040", "customersync.W041", "customersync.W042")
DATABASE_IDS = ("customersync.E043", "customersync.E044")


def found(messages, ids=PLATFORM_IDS + DATABASE_IDS):
    return [(m.id, m.msg) for m in messages if m.id in ids]


# (case, PLATFORMS, the messages expected: id and a part of the text)
PLATFORM_SETTINGS = [
    ("a list", [("eu", {"API_KEY": key_in("test")})], [("E040", "must be a dict of platform name")]),
    ("a string", "eu", [("E040", "must be a dict of platform name")]),
    ("an upper-case name", {"EU": {"API_KEY": key_in("test")}}, [("E040", "lowercase letters, digits")]),
    ("a name with a space", {"e u": {"API_KEY": key_in("test")}}, [("E040", "lowercase letters, digits")]),
    ("not a string name", {1: {"API_KEY": key_in("test")}}, [("E040", "lowercase letters, digits")]),
    ("'default'", {"default": {"API_KEY": key_in("test")}}, [("E040", "'default' is the top-level API_KEY")]),
    ("'connect'", {"connect": {"API_KEY": key_in("test")}}, [("E040", "'connect' names the default")]),
    ("an entry not a dict", {"eu": key_in("test")}, [("E040", "must be a dict with API_KEY")]),
    (
        "unknown keys",
        {"eu": {"API_KEY": key_in("test"), "SECRET_KEY": "x", "api_key": "y"}},
        [("E040", "unknown key(s) SECRET_KEY, api_key")],
    ),
    ("no API_KEY", {"eu": {"WEBHOOK_SECRET": "whsec_x"}}, [("W041", "['eu']['API_KEY'] is not set")]),
    ("an empty API_KEY", {"eu": {"API_KEY": ""}}, [("W041", "['eu']['API_KEY'] is not set")]),
    ("a publishable key", {"eu": {"API_KEY": "pk_test_abc"}}, [("W042", "its mode cannot be checked")]),
    ("a key of no known kind", {"eu": {"API_KEY": "sk_abc"}}, [("W042", "its mode cannot be checked")]),
    (
        "each entry on its own",
        {"ok": {"API_KEY": key_in("live", "rk")}, "default": {}, "eu": {"API_KEY": None}},
        [("E040", "'default' is the top-level"), ("W041", "['eu']['API_KEY'] is not set")],
    ),
    (
        "good ones",
        {
            "eu": {"API_KEY": key_in("test"), "WEBHOOK_SECRET": ["whsec_a", "whsec_b"], "RATE_LIMIT": 10},
            "us_2": {"API_KEY": key_in("live", "rk"), "CONNECT_WEBHOOK_SECRET": "whsec_c"},
        },
        [],
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize("database", [False, True], ids=["check", "check --database default"])
@pytest.mark.parametrize(
    "platforms, expected", [c[1:] for c in PLATFORM_SETTINGS], ids=[c[0] for c in PLATFORM_SETTINGS]
)
def test_platform_settings_checks(settings, platforms, expected, database):
    configure(settings, PLATFORMS=platforms)

    messages = found(run_checks(databases=["default"] if database else None))

    assert [m[0] for m in messages] == [f"customersync.{code}" for code, _ in expected], messages
    for (_, text), (_, message) in zip(expected, messages, strict=True):
        assert text in message, message


@pytest.mark.django_db
def test_database_checks_report_accounts_without_a_platform_and_customers_in_the_other_mode(stripe, settings):
    configure(settings, PLATFORMS={"eu": {"API_KEY": key_in("live")}, "odd": {"API_KEY": "sk_nomode"}})
    default_connected = Account.objects.create(platform="default", stripe_account="acct_1Default")
    eu = Account.objects.create(platform="eu")
    odd = Account.objects.create(platform="odd")

    def customer(livemode, account=None):
        made = mirrored(stripe)
        Customer.objects.filter(pk=made.pk).update(account=account)
        if livemode is not None:
            reported_in(made, livemode)
        return made

    # The default platform's key is sk_test_: live customers of its own and its connected accounts are wrong.
    customer(False), customer(True), customer(True, default_connected), customer(False, default_connected)
    # eu's key is live: its test customers are wrong.
    customer(True, eu), customer(False, eu), customer(False, eu)
    # odd's key says no mode: nothing to compare.
    customer(True, odd), customer(False, odd)
    Customer.objects.create(name="never confirmed")  # no stripe_data: no mode yet
    no_mode = customer(None)
    data = {k: v for k, v in no_mode.stripe_data.items() if k != "livemode"}
    Customer.objects.filter(pk=no_mode.pk).update(stripe_data=data)  # an answer without livemode

    assert [m[0] for m in found(run_checks())] == ["customersync.W042"]  # odd's key; no database check without it
    messages = found(run_checks(databases=["default"]), DATABASE_IDS)
    assert [m[0] for m in messages] == ["customersync.E044"]
    assert messages[0][1].startswith("4 customers are in another mode (test or live) than their account's key")

    # Accounts naming platforms the settings no longer have.
    Account.objects.create(platform="gone")
    Account.objects.create(platform="gone", stripe_account="acct_1Gone")
    Account.objects.create(platform="also-gone", stripe_account="acct_1Also")
    messages = found(run_checks(databases=["default"]), DATABASE_IDS)
    assert messages[0] == (
        "customersync.E043",
        "Stripe accounts name platforms missing from CUSTOMERSYNC['PLATFORMS']: also-gone, gone.",
    )
    assert messages[1][0] == "customersync.E044" and messages[1][1].startswith("4 customers")

    # As the command reports them.
    with pytest.raises(SystemCheckError) as raised:
        call_command("check", "--database", "default")
    assert "customersync.E043" in str(raised.value) and "customersync.E044" in str(raised.value)
    assert "4 customers are in another mode" in str(raised.value)


@pytest.mark.django_db
def test_database_checks_pass_once_every_customer_is_in_its_keys_mode(stripe, settings):
    configure(settings, PLATFORMS={"eu": {"API_KEY": key_in("live")}})
    eu = Account.objects.create(platform="eu")
    reported_in(mirrored(stripe), False)
    live = mirrored(stripe)
    Customer.objects.filter(pk=live.pk).update(account=eu)
    reported_in(live, True)

    assert found(run_checks(databases=["default"])) == []


def test_database_checks_do_not_fail_before_migrations():
    """On a database with no tables yet (a fresh deploy), as ``migrate`` runs them first."""
    code = """
from django.core.checks import run_checks
from django.core.management import call_command
from django.db import connection
tables = connection.introspection.table_names()
messages = [m.id for m in run_checks(databases=["default"]) if m.id.startswith("customersync.E04")]
call_command("migrate", verbosity=0)
print(json.dumps({"tables": tables, "messages": messages, "migrated": "customersync_customer" in
                  connection.introspection.table_names()}))
"""
    with PrivatePostgres() as pg:
        pg.create_database("fresh")
        result = run_django(code, {"CUSTOMERSYNC_TEST_DATABASE_URL": pg.url_for("fresh")})

    assert result == {"tables": [], "messages": [], "migrated": True}, json.dumps(result)
