"""The site's own owner admin in a real browser, a real worker pushing to the fake Stripe server.

An operator edits an organization (``OwnerAdminMixin``) and follows its Stripe
customer in the page's "Stripe customer" section: pending, in sync, then
refused by Stripe, with Stripe's answer on the owner's own field. A screenshot
of each state is kept in ``test-artifacts/`` (the ``page`` fixture, in conftest.py).
"""

from __future__ import annotations

import pytest

from customersync import sync
from customersync.models import SyncStatus
from tests.owners import field, make_owner
from tests.support import wait_for_tasks

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ADDRESS = {"street": "1 rue de Rivoli", "city": "Paris", "postal_code": "75001", "country": "FR"}
REFUSAL = "This mailbox refuses invoices from Stripe."


def open_owner_page(page, live_server, owner):
    opts = owner._meta
    page.goto(f"{live_server.url}/admin/{opts.app_label}/{opts.model_name}/{owner.pk}/change/")
    page.wait_for_selector(f"#{opts.model_name}_form")


def save_and_continue(page):
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")


def text(page, css: str) -> str:
    return " ".join(page.locator(css).inner_text().split())


def updates(stripe, customer):
    return [r for r in stripe.requests if r.method == "POST" and r.path == f"/v1/customers/{customer.stripe_id}"]


def test_owner_edit_pending_then_in_sync_then_stripes_refusal_on_the_owners_field(
    stripe, start_worker, published_tasks, live_server, page
):
    owner = make_owner("Acme", **{field("email"): "billing@acme.test", **ADDRESS})
    customer = sync.get_or_create_for(owner, wait=True)
    stripe.clear_requests()
    email = f"input[name={field('email')}]"

    open_owner_page(page, live_server, owner)
    assert "In sync" in text(page, ".field-customersync_status")
    link = page.locator(".field-customersync_customer a")
    assert link.inner_text() == customer.stripe_id
    assert link.get_attribute("href") == f"/admin/customersync/customer/{customer.pk}/change/"
    page.shot("linked")

    # An edit: pending, and the section says what the push will send.
    page.fill(email, "accounts@acme.test")
    save_and_continue(page)
    assert "Pending" in text(page, ".field-customersync_status")
    rows = page.locator(".field-customersync_pending tr").all_inner_texts()[1:]
    assert rows == ["email\tbilling@acme.test\t→\taccounts@acme.test"]
    page.shot("pending")

    # The worker pushes it; once its request reached Stripe, the page says in sync.
    start_worker()
    wait_for_tasks(published_tasks)
    (request,) = updates(stripe, customer)
    assert (request.body, request.status) == (b"email=accounts%40acme.test", 200)
    assert stripe.get_customer(customer.stripe_id)["email"] == "accounts@acme.test"
    page.reload()
    page.wait_for_selector(".field-customersync_status")
    assert "In sync" in text(page, ".field-customersync_status")
    assert "Nothing to send." in text(page, ".field-customersync_pending")
    assert page.locator(".errorlist").count() == 0
    page.shot("in-sync")

    # Stripe refuses the next push: its answer lands on the owner's billing email.
    stripe.clear_requests()
    published_tasks.clear()
    stripe.inject(
        status=400,
        error={"type": "invalid_request_error", "code": "email_invalid", "param": "email", "message": REFUSAL},
    )
    page.fill(email, "bounce@acme.test")
    save_and_continue(page)
    wait_for_tasks(published_tasks)
    (request,) = updates(stripe, customer)
    assert (request.body, request.status) == (b"email=bounce%40acme.test", 400)
    assert stripe.get_customer(customer.stripe_id)["email"] == "accounts@acme.test"
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.FAILED
    page.reload()
    on_field = f".field-{field('email')} .errorlist"
    page.wait_for_selector(on_field)
    assert text(page, on_field) == f"Stripe refused the last push (email_invalid): {REFUSAL}"
    assert page.locator(email).input_value() == "bounce@acme.test"  # the owner's value is kept
    assert "Failed" in text(page, ".field-customersync_status")
    section = text(page, ".field-customersync_error")
    assert REFUSAL in section and "email_invalid" in section and "email" in section
    assert "bounce@acme.test" in text(page, ".field-customersync_pending")
    page.shot("stripe-refused")
