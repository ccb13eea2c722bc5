"""The admin flows in a real browser: Playwright driving Debian's Chromium.

The site is pytest-django's live server; a real worker pushes to the fake
Stripe server. A screenshot of each page is kept in ``test-artifacts/``
(the ``page`` fixture, in conftest.py); the customer page as the docs show it
is written to ``docs/images/`` too with ``CUSTOMERSYNC_DOCS_SCREENSHOTS=1``
(``scripts/screenshots``).
"""

from __future__ import annotations

import pytest

from customersync import sync
from customersync.exceptions import RetryLater
from customersync.models import PendingPush, SyncStatus
from tests.support import wait_for_tasks

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ADDRESS = {
    "city": "Paris",
    "country": "FR",
    "line1": "1 rue de Rivoli",
    "line2": None,
    "postal_code": "75001",
    "state": None,
}


def open_change_page(page, live_server, customer):
    page.goto(f"{live_server.url}/admin/customersync/customer/{customer.pk}/change/")
    page.wait_for_selector("#customer_form")


def test_edit_three_fields_see_them_pending_then_pushed(stripe, start_worker, published_tasks, live_server, page):
    customer = sync.pull_one(
        stripe.add_customer(email="old@example.com", name="Ann", metadata={"keep": "1", "drop": "2"}, address=ADDRESS)[
            "id"
        ]
    )
    stripe.clear_requests()
    open_change_page(page, live_server, customer)
    page.shot("before")
    page.fill("input[name=email]", "new@example.com")
    drop_row = page.locator("input[value=drop]").get_attribute("name").removesuffix("_key")
    page.fill(f"input[name={drop_row}_key]", "")  # remove the key
    page.fill("input[name=address_city]", "Lyon")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")

    panel = page.locator(".customersync-pending")
    rows = panel.locator("tr").all_inner_texts()[1:]
    page.shot("pending")
    # The address goes whole, but only the part that changes is a row: the note names the others.
    assert [row.split("\t")[0] for row in rows] == [
        "email",
        "metadata[drop]",
        "address[city]",
        "address is sent whole, with its unchanged country, line1, postal_code.",
    ]
    assert "old@example.com\t→\tnew@example.com" in rows[0]
    assert "2\t→\t(unset)" in rows[1] and "Paris\t→\tLyon" in rows[2]
    assert "Pending" in page.locator(".field-sync_badge").inner_text()

    start_worker()
    wait_for_tasks(published_tasks)
    (request,) = [r for r in stripe.requests if r.method == "POST"]
    assert request.body == (
        b"email=new%40example.com&metadata[drop]=&address[city]=Lyon&address[country]=FR"
        b"&address[line1]=1+rue+de+Rivoli&address[postal_code]=75001"
    )
    open_change_page(page, live_server, customer)
    assert "In sync" in page.locator(".field-sync_badge").inner_text()
    assert "Nothing to send" in page.locator(".field-pending_changes").inner_text()
    page.shot("in-sync")
    page.goto(f"{live_server.url}/admin/customersync/customer/")
    assert "In sync" in page.locator("tr", has_text="new@example.com").inner_text()
    page.shot("list")


def test_bad_invoice_prefix_is_a_form_error_and_nothing_is_queued(stripe, live_server, page):
    customer = sync.pull_one(stripe.add_customer(email="a@example.com")["id"])
    open_change_page(page, live_server, customer)
    page.fill("input[name=invoice_prefix]", "bad prefix")
    page.click("input[name=_continue]")
    error = page.locator(".field-invoice_prefix .errorlist")
    assert "uppercase letters or digits" in error.inner_text()
    page.shot("form-error")
    assert not PendingPush.objects.exists()
    customer.refresh_from_db()
    assert customer.invoice_prefix != "bad prefix" and customer.sync_status == SyncStatus.IN_SYNC


def test_stripe_400_shows_stripes_message_on_the_field(stripe, start_worker, published_tasks, live_server, page):
    customer = sync.pull_one(stripe.add_customer(email="a@example.com")["id"])
    stripe.inject(
        status=400,
        error={
            "type": "invalid_request_error",
            "message": "Your footer mentions a forbidden word.",
            "param": "invoice_settings[footer]",
        },
    )
    start_worker()
    open_change_page(page, live_server, customer)
    page.fill("textarea[name=invoice_footer]", "Buy now!")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    wait_for_tasks(published_tasks)
    open_change_page(page, live_server, customer)
    error = page.locator(".field-invoice_footer .errorlist")
    assert "Your footer mentions a forbidden word." in error.inner_text()
    assert page.locator("textarea[name=invoice_footer]").input_value() == "Buy now!"  # the edit is kept
    assert "Failed" in page.locator(".field-sync_badge").inner_text()
    page.shot("stripe-error")


def test_customer_page_as_the_docs_show_it(stripe, published_tasks, live_server, page):
    """The top of a customer's page (status, what the next push sends, what happened), on a laptop
    and on a phone: docs/images/admin-change-page.png and admin-change-page-phone.png."""
    customer = sync.pull_one(
        stripe.add_customer(name="Ann Example", email="ann@example.com", metadata={"plan": "gold"}, address=ADDRESS)[
            "id"
        ]
    )
    # An earlier push: Stripe answered 503 once, then confirmed the same request.
    customer.phone = "+33 1 23 45 67 89"
    customer.save()
    stripe.inject(status=503)
    with pytest.raises(RetryLater):
        sync.push(customer.pk)
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    stripe.clear_requests()

    # An operator's edit of three parameters, not pushed yet.
    open_change_page(page, live_server, customer)
    page.fill("input[name=email]", "billing@example.com")
    plan_row = page.locator("input[value=plan]").get_attribute("name").removesuffix("_key")
    page.fill(f"input[name={plan_row}_value]", "platinum")
    page.fill("input[name=address_city]", "Lyon")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")

    rows = page.locator(".customersync-pending tr").all_inner_texts()[1:]
    assert [row.split("\t")[0] for row in rows] == [
        "email",
        "metadata[plan]",
        "address[city]",
        "address is sent whole, with its unchanged country, line1, postal_code.",
    ]
    open_change_page(page, live_server, customer)  # as an operator finds it, without the save's message
    assert "Pending" in page.locator(".field-sync_badge").inner_text()
    history = page.locator(".field-sync_history").inner_text()
    assert "Succeeded" in history and "Will retry" in history and "503" in history
    page.docs_shot("admin-change-page", width=1366, down_to=".field-conflicts_list")
    page.docs_shot("admin-change-page-phone", width=390, down_to=".field-conflicts_list")
    assert stripe.requests == []  # the edit waits for a worker
