"""The admin's sync-health page: each account's card, its figures, and the lists its links open."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from customersync.models import Conflict, Customer, PushAttempt
from tests.accounts.test_accounts import fleet as fleet  # the fixture, for these tests
from tests.health.test_integrations import driven as driven  # two accounts driven to their figures

pytestmark = pytest.mark.django_db

OVERVIEW = "/admin/customersync/customer/overview/"


def cards(html: str) -> dict[str, dict[str, str]]:
    """account -> figure -> its text (tags dropped), as the page shows them."""
    found: dict[str, dict[str, str]] = {}
    for account, body in re.findall(r'data-account="([^"]+)">(.*?)</section>', html, re.S):
        found[account] = {
            key: re.sub(r"<[^>]+>", "", text).strip()
            for key, text in re.findall(r'<dd data-figure="([^"]+)">(.*?)</dd>', body, re.S)
        }
    return found


def links(html: str, account: str) -> dict[str, str]:
    body = re.search(rf'data-account="{re.escape(account)}">(.*?)</section>', html, re.S)[1]
    return {
        key: href.replace("&amp;", "&") for key, href in re.findall(r'data-figure="([^"]+)"><a href="([^"]+)"', body)
    }


def test_each_account_has_its_card_with_its_figures(driven, admin_client):
    html = admin_client.get(OVERVIEW).content.decode()
    found = cards(html)
    assert list(found) == ["default", "default/acct_C1", "second", "second/acct_C2"]
    assert found["default"]["waiting"] == "1 (1 ready)"
    assert re.fullmatch(r"[67] min ago", found["default"]["oldest_ready_age"])  # 400 s
    assert (found["default"]["failed"], found["default/acct_C1"]["failed"]) == ("1", "2")
    assert (found["default"]["conflicts"], found["default/acct_C1"]["conflicts"]) == ("0", "1")
    assert found["default/acct_C1"]["waiting"] == "1 (0 ready)"
    assert found["default/acct_C1"]["oldest_ready_age"] == "-"
    assert found["default"]["catch_up"] == "2 min ago"
    assert found["default/acct_C1"]["catch_up"] == "never, behind: a reconcile is due"
    assert found["second"]["last_webhook"] == "none in 1 h"
    assert re.fullmatch(r"\d+ s ago", found["default"]["last_webhook"])
    assert re.fullmatch(r"\d+%", found["default"]["budget_used"])
    # The levels and what makes them.
    assert 'customersync-card customersync-level-critical" data-account="default"' in html
    assert 'customersync-level-warning" data-account="default/acct_C1"' in html
    assert "oldest ready push waited" in html


def test_each_count_links_to_the_list_it_counts(driven, admin_client):
    html = admin_client.get(OVERVIEW).content.decode()
    c1 = driven["C1"]
    found = links(html, "default/acct_C1")
    failed = admin_client.get(found["failed"])
    assert failed.status_code == 200
    assert [c.pk for c in failed.context["cl"].result_list] == list(
        Customer.objects.filter(account=c1, sync_status="failed").order_by("-pk").values_list("pk", flat=True)
    )
    conflicts = admin_client.get(found["conflicts"])
    assert [c.pk for c in conflicts.context["cl"].result_list] == list(
        Conflict.objects.filter(customer__account=c1).values_list("pk", flat=True)
    )
    pushes = admin_client.get(found["pushes"])
    assert {a.customer.account_id for a in pushes.context["cl"].result_list} == {c1.pk}
    assert len(pushes.context["cl"].result_list) == PushAttempt.objects.filter(customer__account=c1).count()
    waiting = admin_client.get(found["waiting"])
    assert [c.name for c in waiting.context["cl"].result_list] == ["Paused 2"]
    webhooks = admin_client.get(found["last_webhook"])
    assert [(e.platform, e.stripe_account) for e in webhooks.context["cl"].result_list] == [("default", "acct_C1")]
    default_failed = admin_client.get(links(html, "default")["failed"])
    assert [c.name for c in default_failed.context["cl"].result_list] == ["Refused 2"]


def test_the_app_index_and_the_customer_list_link_to_it(admin_client):
    for page in ("/admin/customersync/", "/admin/customersync/customer/"):
        assert f'href="{reverse("admin:customersync_overview")}"' in admin_client.get(page).content.decode()


def test_it_needs_the_permission_to_view_customers(client, django_user_model):
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(OVERVIEW).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_customer"))
    assert client.get(OVERVIEW).status_code == 200
    client.logout()
    assert client.get(OVERVIEW).status_code == 302  # to the login page
