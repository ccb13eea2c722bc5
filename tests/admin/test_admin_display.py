"""What the admin's pages say: the dashboard link, what a push sent, one way to show a moment, the panel's rows."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils.html import strip_tags

from customersync import sync
from customersync.admin.params import Row, change_rows, sent_lines
from customersync.core.params import Role
from customersync.models import Customer, PushAttempt

pytestmark = pytest.mark.django_db

ADDRESS = {"city": "Paris", "country": "FR", "line1": "1 rue de Rivoli", "postal_code": "75001"}
MOMENT = re.compile(r"<time class=\"customersync-time\" datetime=\"[^\"]+\">([^<]*)</time>")


@pytest.fixture
def operator(admin_user, client):
    client.force_login(admin_user)
    return admin_user


def change_page(client, customer) -> str:
    return client.get(reverse("admin:customersync_customer_change", args=[customer.pk])).content.decode()


def words(html: str) -> str:
    return " ".join(strip_tags(html).split())


def section(page: str, field: str) -> str:
    """The rendered row of one field of the change page."""
    start = page.index(f"field-{field}")
    ends = [page.find(end, start) for end in ('<div class="form-row', "</fieldset>")]
    return page[start : min(end for end in ends if end != -1)]


# -- the Stripe dashboard link ---------------------------------------------------------


@pytest.mark.parametrize(
    "livemode, url",
    [(False, "https://dashboard.stripe.com/test/customers/{}"), (True, "https://dashboard.stripe.com/customers/{}")],
)
def test_stripe_id_links_to_the_dashboard_in_the_customers_mode(stripe, client, operator, livemode, url):
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    Customer.objects.filter(pk=customer.pk).update(livemode=livemode)
    href = f'href="{url.format(customer.stripe_id)}"'
    row = section(change_page(client, customer), "stripe_link")
    assert href in row and 'target="_blank"' in row and 'rel="noopener noreferrer"' in row
    assert ("live mode" if livemode else "test mode") in words(row)
    listing = client.get(reverse("admin:customersync_customer_changelist")).content.decode()
    assert href in listing


def test_a_customer_not_yet_in_stripe_has_no_link(client, operator):
    customer = Customer.objects.create(name="New")
    assert "Not in Stripe yet" in words(section(change_page(client, customer), "stripe_link"))


# -- what a push sent, decoded ---------------------------------------------------------------


def test_history_shows_params_decoded_and_tokens_redacted(stripe, client, operator):
    customer = sync.pull_one(stripe.add_customer(email="a@example.com", address=ADDRESS)["id"])
    customer.email = "zoe+billing@example.com"
    customer.address = {**ADDRESS, "city": "Saint-Étienne"}
    customer.metadata = {"plan": "gold & silver"}
    customer.pending_once = {"source": "tok_visa"}
    customer.save()
    sync.push(customer.pk)
    history = section(change_page(client, customer), "sync_history")
    text = words(history)
    assert "email zoe+billing@example.com" in text
    assert "metadata[plan] gold &amp; silver" in text or "metadata[plan] gold & silver" in text
    assert "address (whole) city: Saint-Étienne, country: FR, line1: 1 rue de Rivoli, postal_code: 75001" in text
    assert "source [redacted]" in text and "tok_visa" not in history
    for raw in ("%40", "%C3", "+billing%", "address[city]=", '{"', "&amp;metadata"):
        assert raw not in history, raw
    attempt = PushAttempt.objects.get(customer=customer)
    page = client.get(reverse("admin:customersync_pushattempt_change", args=[attempt.pk])).content.decode()
    sent = words(section(page, "sent_params"))
    assert "address (whole) city: Saint-Étienne" in sent and "tok_visa" not in page and '{"' not in sent


def test_attempt_page_is_titled_by_customer_and_attempt_number(stripe, client, operator):
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    for name in ("Ann B", "Ann C"):
        customer.name = name
        customer.save()
        sync.push(customer.pk)
    second = PushAttempt.objects.filter(customer=customer).order_by("id").last()
    page = client.get(reverse("admin:customersync_pushattempt_change", args=[second.pk])).content.decode()
    title = f"Push attempt 2 for Ann C ({customer.stripe_id})"
    assert f"<h2>{title}</h2>" in page
    assert f"&rsaquo; {title}" in page  # the breadcrumb
    assert f"of {customer.pk}" not in words(page)


# -- one way to show a moment, with its time zone -------------------------------------------


@pytest.mark.parametrize("zone, abbreviation", [("UTC", "UTC"), ("Europe/Paris", "CE")])
def test_every_moment_reads_the_same_with_its_time_zone(stripe, client, operator, settings, zone, abbreviation):
    settings.TIME_ZONE = zone
    customer = sync.pull_one(stripe.add_customer(name="Ann", created=1764000000)["id"])
    customer.name = "Bob"
    customer.save()
    sync.push(customer.pk)
    attempt = PushAttempt.objects.get(customer=customer)
    pages = {
        "list": reverse("admin:customersync_customer_changelist"),
        "change": reverse("admin:customersync_customer_change", args=[customer.pk]),
        "sync log": reverse("admin:customersync_pushattempt_changelist"),
        "attempt": reverse("admin:customersync_pushattempt_change", args=[attempt.pk]),
    }
    for name, url in pages.items():
        html = client.get(url).content.decode()
        shown = MOMENT.findall(html)
        assert shown, name
        for moment in shown:
            assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {abbreviation}[A-Z]*", moment), (name, moment)
        assert not re.search(r"\b[ap]\.m\.", html), name  # never Django's "Nov. 25, 2026, 9:26 p.m."
    created = MOMENT.findall(section(client.get(pages["change"]).content.decode(), "created_in_stripe"))
    expected = "2025-11-24 16:00:00 UTC" if zone == "UTC" else "2025-11-24 17:00:00 CET"
    assert created == [expected]


# -- the panel's rows ---------------------------------------------------------------------------


def test_an_object_sent_whole_shows_the_parts_that_change_and_names_the_others():
    confirmed = {"address": {**ADDRESS, "line2": "Apt 4"}}
    params = {
        "address": {"city": "Lyon", "country": "FR", "line1": "1 rue de Rivoli", "line2": "", "postal_code": "75001"}
    }
    assert change_rows(confirmed, params) == [
        Row("address[city]", "Paris", "Lyon"),
        Row("address[line2]", "Apt 4", ""),
        Row("address", None, None, whole=["country", "line1", "postal_code"]),
    ]


def test_nested_objects_lists_metadata_and_write_once_values():
    confirmed = {
        "shipping": {"name": "Ann", "address": {"city": "Paris", "country": "FR"}},
        "preferred_locales": ["en"],
        "metadata": {"a": "1"},
    }
    params = {
        "shipping": {"name": "Ann", "address": {"city": "Lyon", "country": "FR"}},
        "preferred_locales": ["fr", "en"],
        "metadata": {"a": ""},
        "tax": {"ip_address": "192.0.2.1"},
    }
    assert change_rows(confirmed, params) == [
        Row("shipping[address][city]", "Paris", "Lyon"),
        Row("shipping", None, None, whole=["name", "address[country]"]),
        Row("preferred_locales", ["en"], ["fr", "en"]),
        Row("metadata[a]", "1", ""),
        Row("tax[ip_address]", None, "192.0.2.1", Role.WRITE_ONCE),
    ]
    assert change_rows({"address": ADDRESS}, {"address": ""}) == [Row("address", ADDRESS, "")]
    assert sent_lines(params) == [
        ("shipping", params["shipping"], True),
        ("preferred_locales", ["fr", "en"], False),
        ("metadata[a]", "", False),
        ("tax[ip_address]", "192.0.2.1", False),
    ]
