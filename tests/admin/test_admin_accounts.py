"""The admin with several Stripe accounts: the list's account column and filters, the dashboard link under a
connected account, the account field, the Account admin, and actions that act in each customer's account.

A site with one account (no ``Account`` rows) sees none of it. The fake Stripe
server keeps one store for every account: what shows which account a request
acted on is the ``Stripe-Context`` header it received. The last test drives
Chromium through the list's account filter; its screenshots are kept in
``test-artifacts/`` (the ``page`` fixture, in conftest.py).
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils.html import strip_tags

from customersync import sync
from customersync.models import Account, Customer
from tests.admin_forms import edit

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:customersync_customer_changelist"
# A request of the customer list, whatever its rows and accounts: the session, the user, whether
# anything failed (for the actions, four times), whether there are accounts (twice), the accounts
# (the filter's choices), the two counts and the page of customers with their accounts.
CHANGELIST_QUERIES = 12
ALPHA, BETA = "acct_1Alpha", "acct_1Beta"


@pytest.fixture
def operator(admin_user, client):
    client.force_login(admin_user)
    return admin_user


@pytest.fixture
def accounts(db):
    """Two connected accounts of the default platform."""
    return {
        "alpha": Account.objects.create(platform="default", stripe_account=ALPHA, name="Alpha"),
        "beta": Account.objects.create(platform="default", stripe_account=BETA, name="Beta"),
    }


def mirrored(stripe, email: str, account: Account | None = None, *, livemode: bool = False) -> Customer:
    """A customer in Stripe (the fake's store of the connected account, if any), pulled into ``account``."""
    where = (account.stripe_account or None) if account is not None else None
    customer = sync.pull_one(stripe.add_customer(account=where, email=email)["id"], account=account)
    if livemode:
        Customer.objects.filter(pk=customer.pk).update(livemode=True)
        customer.refresh_from_db()
    return customer


def changelist(client, **params) -> str:
    return client.get(reverse(CHANGELIST), params).content.decode()


def change_page(client, customer) -> str:
    return client.get(reverse("admin:customersync_customer_change", args=[customer.pk])).content.decode()


def rows(page: str) -> dict[str, str]:
    """The list's rows by customer (its email), as HTML."""
    body = page[page.index("<tbody>") : page.index("</tbody>")]
    found = {}
    for row in re.findall(r"<tr>.*?</tr>", body, re.S):
        email = re.search(r'title="([^"]+@example\.com)"', row)
        assert email, row
        found[email.group(1)] = row
    return found


def cell(row: str, column: str) -> str:
    match = re.search(rf'<td class="field-{column}">(.*?)</td>', row, re.S)
    assert match, (column, row)
    return " ".join(strip_tags(match.group(1)).split())


def account_filter(page: str) -> list[tuple[str, str]]:
    """The account filter's choices: (the link's query, its label)."""
    match = re.search(r'<details data-filter-title="Stripe account".*?</details>', page, re.S)
    assert match, "no account filter"
    return [
        (href, " ".join(label.split())) for href, label in re.findall(r'<a href="([^"]*)">([^<]*)</a>', match.group(0))
    ]


def section(page: str, field: str) -> str:
    """The rendered row of one field of the change page."""
    start = page.index(f"field-{field}")
    ends = [page.find(end, start) for end in ('<div class="form-row', "</fieldset>")]
    return page[start : min(end for end in ends if end != -1)]


def dashboard_href(html: str) -> str:
    match = re.search(r'<a class="customersync-dashboard" href="([^"]+)"', html)
    assert match, html
    return match.group(1)


# -- one account: nothing new --------------------------------------------------------------------


def test_a_single_account_site_sees_no_account_column_filter_or_field(stripe, client, operator):
    ann = mirrored(stripe, "ann@example.com")
    new = Customer.objects.create(email="new@example.com")
    page = changelist(client)
    assert set(rows(page)) == {"ann@example.com", "new@example.com"}
    assert "account_column" not in page and 'data-filter-title="Stripe account"' not in page
    assert "?account=" not in page
    for customer in (ann, new):
        form = change_page(client, customer)
        assert "field-account" not in form and 'name="account"' not in form


def test_the_list_takes_the_same_queries_with_thirty_customers_in_two_accounts(
    stripe, client, operator, django_assert_max_num_queries
):
    for i in range(3):
        mirrored(stripe, f"one{i}@example.com")
    with django_assert_max_num_queries(CHANGELIST_QUERIES) as one_account:
        page = changelist(client)
    assert len(rows(page)) == 3

    alpha = Account.objects.create(platform="default", stripe_account=ALPHA)
    beta = Account.objects.create(platform="default", stripe_account=BETA)
    for i in range(30):
        mirrored(stripe, f"many{i}@example.com", (None, alpha, beta)[i % 3])
    with django_assert_max_num_queries(CHANGELIST_QUERIES) as several:
        page = changelist(client)
    shown = rows(page)
    assert len(shown) == 33 and all("field-account_column" in row for row in shown.values())
    assert len(several) == len(one_account)


# -- the list: the account column, the account and mode filters -------------------------------------


def test_account_column_shows_each_customers_account(stripe, client, operator, accounts):
    mirrored(stripe, "ann@example.com")
    mirrored(stripe, "bob@example.com", accounts["alpha"])
    mirrored(stripe, "cy@example.com", accounts["beta"])
    shown = {email: cell(row, "account_column") for email, row in rows(changelist(client)).items()}
    assert shown == {
        "ann@example.com": "default platform",
        "bob@example.com": f"Alpha (default / {ALPHA})",
        "cy@example.com": f"Beta (default / {BETA})",
    }


def test_account_filter_narrows_to_each_account_and_to_the_default_platform(stripe, client, operator, accounts):
    mirrored(stripe, "ann@example.com")
    mirrored(stripe, "bob@example.com", accounts["alpha"])
    mirrored(stripe, "cy@example.com", accounts["beta"])
    mirrored(stripe, "cyd@example.com", accounts["beta"])
    alpha, beta = accounts["alpha"].pk, accounts["beta"].pk
    assert account_filter(changelist(client)) == [
        ("?", "All"),
        ("?account=default", "default platform"),
        (f"?account={alpha}", f"Alpha (default / {ALPHA})"),
        (f"?account={beta}", f"Beta (default / {BETA})"),
    ]
    for value, expected in (
        ("default", {"ann@example.com"}),
        (str(alpha), {"bob@example.com"}),
        (str(beta), {"cy@example.com", "cyd@example.com"}),
    ):
        assert set(rows(changelist(client, account=value))) == expected, value


def test_mode_filter_narrows_to_test_or_live(stripe, client, operator, accounts):
    mirrored(stripe, "test@example.com")
    mirrored(stripe, "live@example.com", livemode=True)
    mirrored(stripe, "connected-live@example.com", accounts["alpha"], livemode=True)
    assert set(rows(changelist(client, mode="test"))) == {"test@example.com"}
    assert set(rows(changelist(client, mode="live"))) == {"live@example.com", "connected-live@example.com"}
    both = changelist(client, mode="live", account=accounts["alpha"].pk)
    assert set(rows(both)) == {"connected-live@example.com"}


# -- the change page: the dashboard link, the account field -------------------------------------------


@pytest.mark.parametrize("livemode, mode", [(False, "test/"), (True, "")])
def test_dashboard_link_goes_under_a_connected_account_only(stripe, client, operator, accounts, livemode, mode):
    connected = mirrored(stripe, "bob@example.com", accounts["alpha"], livemode=livemode)
    default = mirrored(stripe, "ann@example.com", livemode=livemode)
    expected = {
        connected: f"https://dashboard.stripe.com/{ALPHA}/{mode}customers/{connected.stripe_id}",
        default: f"https://dashboard.stripe.com/{mode}customers/{default.stripe_id}",
    }
    listing = rows(changelist(client))
    for customer, url in expected.items():
        assert dashboard_href(section(change_page(client, customer), "stripe_link")) == url
        assert dashboard_href(listing[customer.email]) == url


def test_a_platforms_own_account_has_no_account_in_the_link(stripe, client, operator, settings):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PLATFORMS": {"eu": {"API_KEY": settings.TEST_API_KEY}}}
    own = mirrored(stripe, "eu@example.com", Account.objects.create(platform="eu"))
    url = f"https://dashboard.stripe.com/test/customers/{own.stripe_id}"
    assert dashboard_href(section(change_page(client, own), "stripe_link")) == url


def test_account_field_is_editable_until_the_customer_is_in_stripe(stripe, client, operator, accounts):
    new = Customer.objects.create(email="new@example.com")
    field = section(change_page(client, new), "account")
    assert '<select name="account"' in field
    assert f"Alpha (default / {ALPHA})" in field and f"Beta (default / {BETA})" in field
    response = edit(client, new, account=str(accounts["beta"].pk))
    assert response.status_code == 302, response.content.decode()[:2000]
    new.refresh_from_db()
    assert new.account == accounts["beta"]

    bob = mirrored(stripe, "bob@example.com", accounts["alpha"])
    field = section(change_page(client, bob), "account")
    assert 'name="account"' not in field
    assert f"Alpha (default / {ALPHA})" in strip_tags(field)
    # A form sent with another account anyway (an old page, a crafted POST) does not move it.
    response = edit(client, bob, account=str(accounts["beta"].pk))
    assert response.status_code == 302, response.content.decode()[:2000]
    bob.refresh_from_db()
    assert bob.account == accounts["alpha"]


# -- the Account admin ------------------------------------------------------------------------------


def test_account_list_shows_each_accounts_mode_and_customer_count(stripe, client, operator, settings, accounts):
    # The platform's key says the mode; built here, so no live-looking key sits in the source.
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PLATFORMS": {"eu": {"API_KEY": "sk_" + "live_" + "x" * 24}}}
    eu = Account.objects.create(platform="eu", name="Europe")
    gone = Account.objects.create(platform="gone", stripe_account="acct_1Gone")  # its platform left the settings
    for i in range(2):
        mirrored(stripe, f"alpha{i}@example.com", accounts["alpha"])
    mirrored(stripe, "beta@example.com", accounts["beta"])
    Customer.objects.create(email="eu@example.com", account=eu)
    page = client.get(reverse("admin:customersync_account_changelist")).content.decode()
    body = page[page.index("<tbody>") : page.index("</tbody>")]
    shown = {}
    for row in re.findall(r"<tr>.*?</tr>", body, re.S):
        name = " ".join(strip_tags(re.search(r'<th class="field-__str__">(.*?)</th>', row, re.S).group(1)).split())
        shown[name] = (cell(row, "mode"), cell(row, "customer_count"))
    assert shown == {
        f"Alpha (default / {ALPHA})": ("test", "2"),
        f"Beta (default / {BETA})": ("test", "1"),
        "Europe (eu / own account)": ("live", "1"),
        str(gone): ("unknown platform", "0"),
    }


def test_account_platform_and_id_are_fixed_once_it_has_customers(stripe, client, operator, accounts):
    mirrored(stripe, "bob@example.com", accounts["alpha"])

    def inputs(account: Account) -> set[str]:
        url = reverse("admin:customersync_account_change", args=[account.pk])
        return set(re.findall(r'<input[^>]*name="(platform|stripe_account)"', client.get(url).content.decode()))

    assert inputs(accounts["beta"]) == {"platform", "stripe_account"}
    assert inputs(accounts["alpha"]) == set()


# -- actions act in each customer's account -----------------------------------------------------------


def test_refresh_from_stripe_sends_each_customers_account_in_stripe_context(stripe, client, operator, accounts):
    bob = mirrored(stripe, "bob@example.com", accounts["alpha"])
    ann = mirrored(stripe, "ann@example.com")
    stripe.clear_requests()
    response = client.post(
        reverse(CHANGELIST), {"action": "refresh_from_stripe", "_selected_action": [bob.pk, ann.pk]}, follow=True
    )
    assert [str(m) for m in response.context["messages"]] == ["Refreshed 2 customers from Stripe."]
    sent = {r.path: r.headers for r in stripe.requests if r.method == "GET"}
    assert set(sent) == {f"/v1/customers/{bob.stripe_id}", f"/v1/customers/{ann.stripe_id}"}
    assert sent[f"/v1/customers/{bob.stripe_id}"].get("Stripe-Context") == ALPHA
    default = sent[f"/v1/customers/{ann.stripe_id}"]
    assert "Stripe-Context" not in default and "Stripe-Account" not in default


@pytest.mark.parametrize("account, header", [("alpha", ALPHA), (None, None)])
def test_refresh_button_pulls_in_the_customers_account(stripe, client, operator, accounts, account, header):
    customer = mirrored(stripe, "bob@example.com", accounts.get(account))
    pulled = customer.last_pulled_at
    stripe.clear_requests()
    response = client.post(reverse("admin:customersync_customer_refresh", args=[customer.pk]))
    assert response.status_code == 302
    (request,) = stripe.requests
    assert request.path == f"/v1/customers/{customer.stripe_id}"
    assert request.headers.get("Stripe-Context") == header and "Stripe-Account" not in request.headers
    customer.refresh_from_db()
    assert customer.account == accounts.get(account) and customer.last_pulled_at > pulled


@pytest.mark.parametrize(
    "platforms, problem",
    [
        ({"eu": {}}, "CUSTOMERSYNC['PLATFORMS']['eu']['API_KEY'] is not set"),
        ({}, "No platform 'eu' in CUSTOMERSYNC['PLATFORMS']"),
    ],
)
def test_refresh_of_an_account_without_a_key_says_so_and_refreshes_the_others(
    stripe, client, operator, settings, platforms, problem
):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PLATFORMS": {"eu": {"API_KEY": settings.TEST_API_KEY}}}
    eu = mirrored(stripe, "eu@example.com", Account.objects.create(platform="eu", stripe_account=BETA))
    ann = mirrored(stripe, "ann@example.com")
    # The platform's key is unset (or the platform gone) since: a settings change, no data change.
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PLATFORMS": platforms}
    stripe.clear_requests()
    response = client.post(
        reverse(CHANGELIST), {"action": "refresh_from_stripe", "_selected_action": [eu.pk, ann.pk]}, follow=True
    )
    assert response.status_code == 200
    shown = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert shown[0] == ("success", "Refreshed 1 customer from Stripe.")
    assert len(shown) == 2 and shown[1][0] == "error" and shown[1][1].startswith(f"{eu.stripe_id}: {problem}")
    assert [r.path for r in stripe.requests] == [f"/v1/customers/{ann.stripe_id}"]


# -- in a real browser ------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_operator_narrows_the_list_to_one_account_in_the_browser(stripe, live_server, page):
    alpha = Account.objects.create(platform="default", stripe_account=ALPHA, name="Alpha")
    beta = Account.objects.create(platform="default", stripe_account=BETA, name="Beta")
    mirrored(stripe, "ann@example.com")
    mirrored(stripe, "bob@example.com", alpha)
    mirrored(stripe, "cy@example.com", beta)
    page.set_viewport_size({"width": 1366, "height": 768})
    page.goto(f"{live_server.url}/admin/customersync/customer/")
    choices = page.locator("#changelist-filter details[data-filter-title='Stripe account'] a")

    def listed() -> dict[str, str]:
        """Each row's customer and what its account column says."""
        found = {}
        for row in page.locator("#result_list tbody tr").all():
            found[row.locator(".field-customer").inner_text().strip()] = row.locator(
                ".field-account_column"
            ).inner_text()
        return found

    assert listed() == {
        "ann@example.com": "default platform",
        "bob@example.com": f"Alpha (default / {ALPHA})",
        "cy@example.com": f"Beta (default / {BETA})",
    }
    widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the list is {widths[0]} px wide in a {widths[1]} px window"
    page.shot("all-accounts")

    choices.filter(has_text=f"Alpha (default / {ALPHA})").click()
    page.wait_for_url(f"**/customer/?account={alpha.pk}")
    assert listed() == {"bob@example.com": f"Alpha (default / {ALPHA})"}
    assert page.locator("#changelist-filter li.selected", has_text="Alpha").count() == 1
    assert (
        page.locator(".field-stripe_id_link a")
        .get_attribute("href")
        .startswith(f"https://dashboard.stripe.com/{ALPHA}/test/customers/")
    )
    page.shot("alpha")

    choices.filter(has_text="default platform").click()
    page.wait_for_url("**/customer/?account=default")
    assert listed() == {"ann@example.com": "default platform"}
    page.shot("default-platform")
