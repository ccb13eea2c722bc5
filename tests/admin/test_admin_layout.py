"""The admin's pages fit the window, on a 1366x900 laptop and on a 390x844 phone, and say what they should.

Each page is checked in the browser itself: the document is no wider than the
window (no horizontal scrollbar), and on the laptop a list's table fits its
box too (on a phone it scrolls inside its box, as Django's own lists do).
A screenshot of each page and size is kept in ``test-artifacts/``.
"""

from __future__ import annotations

import re

import pytest

from customersync import sync
from customersync.models import Customer, PushAttempt

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = {"laptop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}
MOMENT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")
ADDRESS = {"city": "Paris", "country": "FR", "line1": "1 rue de Rivoli", "postal_code": "75001"}
REFUSAL = (
    "The invoice footer may not contain promotional text such as discount codes or prices; remove it and "
    "try again, or ask your account team to review this customer's invoice settings."
)


@pytest.fixture
def customers(stripe):
    """Three customers as an operator meets them: in sync after a retried push, pending, failed."""
    ann = sync.pull_one(stripe.add_customer(name="Ann Example", email="ann@example.com", address=ADDRESS)["id"])
    ann.name = "Ann Example-Long-Surname"
    ann.save()
    stripe.inject(status=503)
    with pytest.raises(sync.RetryLater):
        sync.push(ann.pk)
    sync.push(ann.pk)

    bob = sync.pull_one(stripe.add_customer(name="Bob", email="bob@example.com", address=ADDRESS)["id"])
    bob.email = "robert.with.a.rather.long.address@subsidiary.example.com"
    bob.address = {**ADDRESS, "city": "Lyon"}
    bob.save()

    cy = sync.pull_one(stripe.add_customer(name="Cy", email="cy@example.com")["id"])
    cy.invoice_settings = {**(cy.invoice_settings or {}), "footer": "20% off with code SPRING"}
    cy.save()
    stripe.inject(
        status=400,
        error={
            "type": "invalid_request_error",
            "code": "parameter_invalid",
            "message": REFUSAL,
            "param": "invoice_settings[footer]",
        },
    )
    sync.push(cy.pk)
    return {name: Customer.objects.get(pk=c.pk) for name, c in (("in_sync", ann), ("pending", bob), ("failed", cy))}


def visit(page, live_server, path: str, size: str, shot: str) -> None:
    page.set_viewport_size(SIZES[size])
    page.goto(f"{live_server.url}{path}")
    page.wait_for_selector("#content")
    fits = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    page.shot(f"{shot}-{size}")
    assert fits[0] <= fits[1], f"{path} at {size}: the page is {fits[0]} px wide in a {fits[1]} px window"


def list_fits(page) -> None:
    """On the laptop, a list's table fits its box: no scrollbar under it."""
    widths = page.evaluate(
        "() => { const r = document.querySelector('.results'); return [r.scrollWidth, r.clientWidth] }"
    )
    assert widths[0] <= widths[1], f"the list is {widths[0]} px wide in a {widths[1]} px box"


def text(page, css: str) -> str:
    return " ".join(page.locator(css).first.inner_text().split())


def moments(page, css: str = ".customersync-time") -> list[str]:
    return [" ".join(t.split()) for t in page.locator(css).all_inner_texts()]


@pytest.mark.parametrize("size", SIZES)
def test_customer_list(customers, live_server, page, size):
    visit(page, live_server, "/admin/customersync/customer/", size, "customer-list")
    if size == "laptop":
        list_fits(page)
    failed = page.locator("#result_list tr", has_text="cy@example.com")
    assert "Failed" in failed.inner_text()
    cut = failed.locator(".field-status .customersync-truncate")
    assert cut.get_attribute("title") == f"{REFUSAL} (invoice_settings[footer])"  # the whole text on hover
    # Cut to one line: the failed row is no taller than a pending one (name and email on two lines each).
    heights = [
        page.locator("#result_list tr", has_text=name).evaluate("r => r.offsetHeight")
        for name in ("cy@example.com", "robert.with")
    ]
    assert heights[0] <= heights[1] + 4, heights
    assert "Pending" in page.locator("#result_list tr", has_text="robert.with").inner_text()
    pushed = moments(page, ".field-last_pushed .customersync-time")
    assert pushed and all(MOMENT.match(t) for t in pushed), pushed
    link = page.locator("#result_list tr", has_text="ann@example.com").locator("a.customersync-dashboard")
    assert link.get_attribute("href") == f"https://dashboard.stripe.com/test/customers/{customers['in_sync'].stripe_id}"
    page.click(".customersync-actions-help summary")
    assert "Retry failed pushes" in text(page, ".customersync-actions-help")
    option = page.locator("select[name=action] option[value=push_now]")
    assert "Saving already queues a push" in option.get_attribute("title")


@pytest.mark.parametrize("size", SIZES)
def test_change_page_pending(customers, live_server, page, size):
    bob = customers["pending"]
    visit(page, live_server, f"/admin/customersync/customer/{bob.pk}/change/", size, "change-pending")
    headings = [" ".join(h.split()) for h in page.locator("fieldset h2").all_inner_texts()]
    assert headings[:4] == ["Status", "What the next push sends", "What happened", "Contact"]
    assert "Pending" in text(page, ".field-sync_badge")
    rows = [" ".join(r.split()) for r in page.locator(".customersync-pending tr").all_inner_texts()[1:]]
    assert rows == [
        f"email bob@example.com → {bob.email}",
        "address[city] Paris → Lyon",
        "address is sent whole, with its unchanged country, line1, postal_code.",
    ]
    stripe_id = page.locator(".field-stripe_link a")
    assert stripe_id.get_attribute("href") == f"https://dashboard.stripe.com/test/customers/{bob.stripe_id}"
    assert "test mode" in text(page, ".field-stripe_link")
    push = page.locator("button[name=customersync-push]")
    assert "Saving already queues a push" in push.get_attribute("title")
    assert page.locator("button[name=customersync-retry]").count() == 0
    assert "Open this customer in Stripe's dashboard" in stripe_id.get_attribute("title")
    # Rarely used groups start closed.
    assert page.locator("details:has(h2:text('Legacy payment sources'))").get_attribute("open") is None
    assert page.locator("details:has(h2:text('Advanced'))").get_attribute("open") is None


@pytest.mark.parametrize("size", SIZES)
def test_change_page_failed(customers, live_server, page, size):
    cy = customers["failed"]
    visit(page, live_server, f"/admin/customersync/customer/{cy.pk}/change/", size, "change-failed")
    assert "Failed" in text(page, ".field-sync_badge")
    assert REFUSAL in text(page, ".field-sync_error_details")
    assert f"Stripe refused the last push: {REFUSAL}" in text(page, ".field-invoice_footer .errorlist")
    retry = page.locator("button[name=customersync-retry]")
    assert "once the cause shown as the last error is fixed" in retry.get_attribute("title")
    assert page.locator("button[name=customersync-push]").count() == 0  # one button, the one that applies
    history = text(page, ".field-sync_history")
    assert "Failed" in history and "invoice_settings[footer] 20% off with code SPRING" in history
    assert "invoice_settings%5Bfooter%5D" not in history and "+off+" not in history


@pytest.mark.parametrize("size", SIZES)
def test_change_page_in_sync(customers, live_server, page, size):
    ann = customers["in_sync"]
    visit(page, live_server, f"/admin/customersync/customer/{ann.pk}/change/", size, "change-in-sync")
    assert "In sync" in text(page, ".field-sync_badge")
    assert "Nothing to send." in text(page, ".field-pending_changes")
    assert page.locator("button[name=customersync-push]").count() == 0
    assert page.locator("button[name=customersync-retry]").count() == 0
    assert "Reload from Stripe" in page.locator("button[name=customersync-refresh]").get_attribute("title")
    history = text(page, ".field-sync_history")
    assert "Succeeded" in history and "Will retry" in history and "503" in history
    assert "name Ann Example-Long-Surname" in history and "name=" not in history
    shown = moments(page)
    assert len(shown) >= 4 and all(MOMENT.match(t) for t in shown), shown  # pushed, pulled, created, history


@pytest.mark.parametrize("size", SIZES)
def test_sync_log(customers, live_server, page, size):
    visit(page, live_server, "/admin/customersync/pushattempt/", size, "sync-log")
    if size == "laptop":
        list_fits(page)
    failed = page.locator("#result_list tr", has_text="Failed")
    assert "Failed" in failed.inner_text()
    assert failed.locator(".customersync-truncate").last.get_attribute("title") == (
        f"{REFUSAL} (invoice_settings[footer])"
    )
    assert "invoice_settings[footer]" in text(page, "#result_list tr:has-text('Failed') .field-sent_summary")
    started = moments(page, ".field-started .customersync-time")
    assert len(started) == 3 and all(MOMENT.match(t) for t in started), started


@pytest.mark.parametrize("size", SIZES)
def test_attempt_page(customers, live_server, page, size):
    ann = customers["in_sync"]
    attempt = PushAttempt.objects.filter(customer=ann).order_by("id").last()
    visit(page, live_server, f"/admin/customersync/pushattempt/{attempt.pk}/change/", size, "attempt")
    title = f"Push attempt 2 for Ann Example-Long-Surname ({ann.stripe_id})"
    assert text(page, "#content h2") == title
    assert title in text(page, ".breadcrumbs")
    assert "Succeeded" in text(page, ".field-outcome")
    customer = page.locator(".field-customer_page a")
    assert customer.inner_text() == f"Ann Example-Long-Surname ({ann.stripe_id})"
    assert customer.get_attribute("href") == f"/admin/customersync/customer/{ann.pk}/change/"
    sent = text(page, ".field-sent_params .readonly")
    assert sent == "name Ann Example-Long-Surname" and "{" not in sent
    assert all(MOMENT.match(t) for t in moments(page))


@pytest.mark.parametrize("size", SIZES)
def test_conflicts_and_webhook_events(customers, live_server, page, size):
    from django.utils import timezone

    from customersync.models import Conflict, WebhookEvent

    bob = customers["pending"]
    Conflict.objects.create(
        customer=bob,
        param="address",
        local_value={**ADDRESS, "city": "Lyon"},
        remote_value=ADDRESS,
        source="webhook",
        resolution="local_wins",
    )
    WebhookEvent.objects.create(
        event_id="evt_1QxYzAbCdEfGhIjKlMnOpQrS",
        type="customer.updated",
        stripe_id=bob.stripe_id,
        created=timezone.now(),
        outcome="applied",
    )
    visit(page, live_server, "/admin/customersync/conflict/", size, "conflicts")
    if size == "laptop":
        list_fits(page)
    row = text(page, "#result_list tbody tr")
    assert "city: Lyon" in row and "{" not in row
    assert all(MOMENT.match(t) for t in moments(page))
    visit(page, live_server, "/admin/customersync/webhookevent/", size, "webhook-events")
    if size == "laptop":
        list_fits(page)
    assert len(moments(page)) == 1 and all(MOMENT.match(t) for t in moments(page))
    visit(page, live_server, "/admin/customersync/customer/add/", size, "add-customer")
    assert "Not in Stripe yet" in text(page, ".field-stripe_link")
