"""The team site end to end: a profile's save through a real worker, and the team's admin page
with the profile inline in a real browser."""

from __future__ import annotations

import pytest

from customersync import sync
from customersync.models import Customer, PendingPush, PushState
from tests.e2e.test_e2e import canary, posts_for  # noqa: F401  (canary: a fixture)
from tests.support import wait_for_tasks
from tests.teamapp.models import Team, TeamProfile

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def make_team(email: str = "billing@acme.test") -> tuple[Team, Customer]:
    team = Team.objects.create(name="Acme", city="Paris", country="FR")
    TeamProfile.objects.create(team=team, billing_email=email)
    team = Team.objects.get(pk=team.pk)
    return team, sync.get_or_create_for(team, wait=True)


def test_a_profile_save_alone_sends_exactly_the_email_through_a_worker(stripe, start_worker, canary):  # noqa: F811
    team, customer = make_team()
    stripe.clear_requests()
    start_worker()
    profile = TeamProfile.objects.get(team=team)
    profile.billing_email = "accounts@acme.test"
    profile.save()
    canary()  # everything queued before it has been sent
    (request,) = posts_for(stripe, customer)
    assert request.body == b"email=accounts%40acme.test"
    assert stripe.get_customer(customer.stripe_id)["email"] == "accounts@acme.test"


@pytest.mark.browser
def test_the_teams_page_refuses_an_invalid_inline_email_on_its_field_and_sends_a_valid_one(
    stripe, start_worker, published_tasks, live_server, page
):
    team, customer = make_team()
    stripe.clear_requests()
    email = "input[name='profile-0-billing_email']"
    page.goto(f"{live_server.url}/admin/teamapp/team/{team.pk}/change/")
    page.wait_for_selector("#team_form")

    # Refused: a form error on the inline's field, the page answered 200, nothing written.
    page.fill(email, "not an email")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("input[name=_continue]")
    assert answer.value.status == 200
    page.wait_for_selector(".field-billing_email .errorlist")
    assert "Enter a valid email address" in page.locator(".field-billing_email .errorlist").inner_text()
    assert TeamProfile.objects.get(team=team).billing_email == "billing@acme.test"
    assert not PendingPush.objects.filter(state=PushState.PENDING).exists()
    page.shot("inline-refused")

    # A valid one reaches Stripe, through the worker, as exactly that parameter.
    page.fill(email, "accounts@acme.test")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    start_worker()
    wait_for_tasks(published_tasks)
    (request,) = posts_for(stripe, customer)
    assert (request.body, request.status) == (b"email=accounts%40acme.test", 200)
    assert TeamProfile.objects.get(team=team).billing_email == "accounts@acme.test"
    page.shot("inline-sent")
