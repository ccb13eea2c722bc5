"""The commands' errors name the API host and Stripe's HTTP status, and suggest a next step only when it applies."""

from __future__ import annotations

import io

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings

from customersync import sync
from customersync.exceptions import APIConnectionError
from customersync.management.commands.customersync_push import Command as PushCommand
from customersync.models import Customer
from customersync.stripe.client import StripeClient

pytestmark = pytest.mark.django_db

NOWHERE = "http://127.0.0.1:9"  # nothing listens there (the test settings' API_BASE)
REFUSED_KEY = {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****ests."}


def error_of(*args: str, out: io.StringIO | None = None) -> str:
    with pytest.raises(CommandError) as info:
        call_command(*args, stdout=out or io.StringIO(), stderr=io.StringIO())
    message = str(info.value)
    assert ".." not in message and settings.TEST_API_KEY not in message
    return message


def nowhere():
    return override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "API_BASE": NOWHERE})


def test_pull_with_the_connection_refused_names_the_host_and_not_resume():
    with nowhere():
        message = error_of("customersync_pull")
    assert message == (
        f"Pull stopped: could not reach Stripe at {NOWHERE} (connection refused). "
        f"Check CUSTOMERSYNC['API_BASE'] and that this machine can reach {NOWHERE}."
    )


def test_pull_with_a_refused_key_names_the_status_and_the_setting(stripe):
    stripe.inject(status=401, method="GET", error=REFUSED_KEY)
    message = error_of("customersync_pull")
    assert message.startswith(f"Pull stopped: Stripe at {stripe.url} answered HTTP 401 (request req_")
    assert message.endswith(
        ": Invalid API Key provided: sk_test_****ests. "
        "Check CUSTOMERSYNC['API_KEY']: Stripe does not accept it (missing, mistyped or revoked)."
    )
    assert "--resume" not in message


def test_pull_of_an_unknown_id_names_the_status_and_the_id(stripe):
    message = error_of("customersync_pull", "cus_nope")
    assert message.startswith(f"cus_nope: Stripe at {stripe.url} answered HTTP 404 (resource_missing, request req_")
    assert "No such customer: 'cus_nope' (param id). Check the id, and that the customer is in this key's" in message
    assert "--resume" not in message


def test_pull_of_ids_refreshes_the_known_ones_and_lists_the_unknown(stripe):
    known = stripe.add_customer(name="Ann")["id"]
    out = io.StringIO()
    message = error_of("customersync_pull", "cus_nope", known, "cus_gone", out=out)
    assert f"{known}: refreshed" in out.getvalue()
    assert message.startswith(f"2 of 3 customers not found in Stripe at {stripe.url}: cus_nope, cus_gone. Check the id")


def test_an_interrupted_walk_suggests_resume_with_what_was_pulled(stripe, monkeypatch):
    for i in range(5):
        stripe.add_customer(name=f"c{i}")
    real, calls = StripeClient.list_customers, []

    def third_page_refused(self, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise APIConnectionError("Could not talk to Stripe (GET /v1/customers): ConnectionError.") from (
                ConnectionRefusedError(111, "Connection refused")
            )
        return real(self, **kwargs)

    monkeypatch.setattr(StripeClient, "list_customers", third_page_refused)
    message = error_of("customersync_pull", "--page-size=2")
    assert message == (
        f"Pull stopped: could not reach Stripe at {stripe.url} (connection refused). "
        f"Check CUSTOMERSYNC['API_BASE'] and that this machine can reach {stripe.url}. "
        "4 customers were pulled before it stopped: run it again with --resume to continue from there."
    )


def test_a_server_error_mid_walk_says_to_come_back_and_resume(stripe, monkeypatch):
    for i in range(5):
        stripe.add_customer(name=f"c{i}")
    real, calls = StripeClient.list_customers, []

    def second_page_fails(self, **kwargs):
        calls.append(1)
        if len(calls) >= 2:
            stripe.inject(status=500, method="GET")
        return real(self, **kwargs)

    monkeypatch.setattr(StripeClient, "list_customers", second_page_fails)
    first = error_of("customersync_pull", "--page-size=2")
    assert first.startswith(f"Pull stopped: Stripe at {stripe.url} answered HTTP 500")
    assert first.endswith(
        "Stripe could not answer: run it again in a few minutes (https://status.stripe.com). "
        "2 customers were pulled before it stopped: run it again with --resume to continue from there."
    )
    # Resumed while Stripe still fails: the place to continue from is still there.
    again = error_of("customersync_pull", "--page-size=2", "--resume")
    assert again.endswith(
        "2 customers were pulled before it stopped: run it again with --resume to continue from there."
    )


def test_push_with_the_connection_refused_names_the_host(stripe):
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    customer.name = "Bob"
    customer.save()
    out = io.StringIO()
    with nowhere():
        message = error_of("customersync_push", customer.stripe_id, out=out)
    assert (
        f"{customer.stripe_id}: not sent, it stays queued and is retried: "
        f"could not reach Stripe at {NOWHERE} (connection refused)."
    ) in out.getvalue()
    assert message == (
        f"1 of 1 customer failed. Check CUSTOMERSYNC['API_BASE'] and that this machine can reach {NOWHERE}."
    )


def test_push_with_a_refused_key_names_the_status_and_the_setting(stripe):
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    customer.name = "Bob"
    customer.save()
    stripe.inject(status=401, error=REFUSED_KEY)
    out = io.StringIO()
    message = error_of("customersync_push", customer.stripe_id, out=out)
    assert (
        f"{customer.stripe_id}: not sent, it stays queued and is retried: Stripe at {stripe.url} answered HTTP 401"
        in out.getvalue()
    )
    assert message == "1 of 1 customer failed. Check CUSTOMERSYNC['API_KEY']: Stripe does not accept it " + (
        "(missing, mistyped or revoked)."
    )
    # A key may be mid-rotation: the change stays queued, with the error shown, for a worker with the new key.
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.sync_status == "pending" and stored.sync_error["http_status"] == 401


def test_push_command_says_what_its_argument_is():
    help_text = PushCommand().create_parser("manage.py", "customersync_push").format_help()
    assert "Push only these customers (Stripe ids, cus_...)" in " ".join(help_text.split())


@pytest.mark.parametrize("command", ["customersync_push", "customersync_pull"])
def test_an_account_of_a_configured_platform_without_a_row_names_both_needs(command, settings):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PLATFORMS": {"eu": {"API_KEY": "sk_test_eu"}}}
    message = error_of(command, "--account", "eu")
    assert message == (
        "--account: No Stripe account 'eu': an account needs both its platform in CUSTOMERSYNC['PLATFORMS'] "
        "(with its API_KEY) and an Account row. 'eu' is in CUSTOMERSYNC['PLATFORMS'] but has no such row: "
        "add it in the admin (Stripe customer sync > Stripe accounts: platform 'eu', connected account left empty)."
    )


def test_an_account_of_an_unknown_platform_names_both_needs_and_the_known_ones():
    message = error_of("customersync_push", "--account", "nope/acct_1")
    assert message == (
        "--account: No Stripe account 'nope/acct_1': an account needs both its platform in "
        "CUSTOMERSYNC['PLATFORMS'] (with its API_KEY) and an Account row. 'nope' is not in "
        "CUSTOMERSYNC['PLATFORMS'] (known: default): add it there, then the row in the admin "
        "(Stripe customer sync > Stripe accounts: platform 'nope', connected account 'acct_1')."
    )


def test_a_connected_account_of_the_default_platform_without_a_row_needs_the_row():
    message = error_of("customersync_pull", "--account", "default/acct_1")
    assert message == (
        "--account: No Stripe account 'default/acct_1': a connected account of the default platform "
        "(the top-level API_KEY) needs an Account row; add it in the admin "
        "(Stripe customer sync > Stripe accounts: platform 'default', connected account 'acct_1')."
    )


def test_push_of_one_customer_says_customer_once(stripe):
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    customer.name = "Bob"
    customer.save()
    out = io.StringIO()
    call_command("customersync_push", customer.stripe_id, stdout=out)
    assert out.getvalue().splitlines()[-1] == "1 customer processed."


def test_pull_of_one_customer_says_customer_and_conflict_in_the_singular(stripe):
    stripe.add_customer(name="Ann")
    out = io.StringIO()
    call_command("customersync_pull", stdout=out)
    summary = out.getvalue()
    assert summary.startswith("Pulled 1 customer in ") and "customers" not in summary
    assert summary.endswith(": 1 new, 0 refreshed, 0 with local edits kept, 0 conflicts, 0 gone from Stripe.\n")


def test_sweep_of_one_customer_says_customer(stripe, settings, broker_db):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PUSH_ON_SAVE": False}  # only the sweep publishes
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    customer.name = "Bob"
    customer.save()
    broker_db.delete("celery")
    out = io.StringIO()
    call_command("customersync_sweep", "--older-than=0", stdout=out)
    assert out.getvalue() == "Queued 1 customer.\n"
    assert broker_db.llen("celery") == 1  # the one push task, on the real broker
    broker_db.delete("celery")  # no worker runs here: nothing is left for a later test's worker


def test_push_names_a_customer_not_in_stripe_yet_by_its_pk(stripe):
    customer = Customer.objects.create(name="New")
    out = io.StringIO()
    call_command("customersync_push", stdout=out)
    assert out.getvalue().splitlines() == [f"customer {customer.pk}: pushed [name=New]", "1 customer processed."]
