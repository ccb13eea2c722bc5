"""The admin's sync-health page in a real browser (Playwright driving Debian's Chromium): on a
1366 px laptop and a 390 px phone, no horizontal scrollbar and every account's figures shown.
The page as the docs show it is written to ``docs/images/`` with ``CUSTOMERSYNC_DOCS_SCREENSHOTS=1``
(``scripts/screenshots``)."""

from __future__ import annotations

import pytest

from tests.accounts.test_accounts import fleet as fleet  # the fixture, for these tests
from tests.health.test_integrations import driven as driven  # two accounts driven to their figures

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

OVERVIEW = "/admin/customersync/customer/overview/"


def figure(page, account: str, key: str) -> str:
    return page.locator(f'[data-account="{account}"] [data-figure="{key}"]').inner_text().strip()


def test_the_overview_fits_a_laptop_and_a_phone_as_the_docs_show_it(driven, live_server, page):
    boxes = {}
    for width, height in ((1366, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{live_server.url}{OVERVIEW}")
        page.wait_for_selector(".customersync-cards")
        scroll, client = page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert scroll <= client, f"{width} px wide: the page scrolls sideways ({scroll} > {client})"
        assert figure(page, "default", "waiting") == "1 (1 ready)"
        assert (figure(page, "default", "failed"), figure(page, "default/acct_C1", "failed")) == ("1", "2")
        assert figure(page, "default/acct_C1", "conflicts") == "1"
        assert figure(page, "default/acct_C1", "catch_up") == "never, behind: a reconcile is due"
        assert figure(page, "second", "last_webhook") == "none in 1 h"
        first, second = (
            page.locator(f'[data-account="{name}"]').bounding_box() for name in ("default", "default/acct_C1")
        )
        boxes[width] = (first, second)
    laptop, phone = boxes[1366], boxes[390]
    assert laptop[0]["y"] == laptop[1]["y"]  # side by side
    assert phone[1]["y"] >= phone[0]["y"] + phone[0]["height"]  # one above the other

    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"{live_server.url}{OVERVIEW}")
    page.docs_shot("admin-overview", width=1366, down_to=".customersync-cards")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}{OVERVIEW}")
    page.docs_shot("admin-overview-phone", width=390, down_to='[data-account="default/acct_C1"]')
    # The failed count's link opens that account's failed customers.
    page.locator('[data-account="default/acct_C1"] [data-figure="failed"] a').click()
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 2
