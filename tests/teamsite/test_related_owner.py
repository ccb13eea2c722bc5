"""An owner whose billing details live on related models: a team, its one-to-one profile, its contact.

Run with ``CUSTOMERSYNC_TEST_OWNER=team`` (``tests/owner/test_owner_setups.py`` runs them on
PostgreSQL and SQLite): ``"email": "profile.billing_email"`` is entered by the reverse side
of a one-to-one field, ``"phone": "billing_contact.phone"`` by a foreign key the team holds,
the name comes from a method and ``metadata[plan]`` from a property. Pushes run in-process
here; ``test_related_owner_e2e.py`` runs them in a real worker and a browser.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction

from customersync import sync
from customersync.models import Customer, PendingPush, PushState
from tests.teamapp.models import Contact, Office, Team, TeamProfile

pytestmark = pytest.mark.django_db


def posts(stripe):
    return [r for r in stripe.requests if r.method == "POST" and r.path.startswith("/v1/customers/cus_")]


@pytest.fixture
def team(stripe):
    """A team with its profile and contact, its customer created in Stripe; the server's log emptied."""
    contact = Contact.objects.create(phone="+33 1 00 00 00 00", office=Office.objects.create(region="EMEA"))
    team = Team.objects.create(name="Acme", city="Paris", country="FR", billing_contact=contact)
    TeamProfile.objects.create(team=team, billing_email="billing@acme.test")
    customer = sync.get_or_create_for(Team.objects.get(pk=team.pk), wait=True)
    assert customer.email == "billing@acme.test" and customer.phone == "+33 1 00 00 00 00"
    assert customer.metadata["region"] == "EMEA"
    stripe.clear_requests()
    return Team.objects.get(pk=team.pk)


def pushed(stripe, team):
    """Push the team's customer; the bodies the server received."""
    customer = sync.for_owner(team)
    sync.push(customer.pk)
    return [r.body for r in posts(stripe)]


def test_a_profile_save_alone_sends_exactly_the_email(stripe, team):
    profile = TeamProfile.objects.get(team=team)
    profile.billing_email = "accounts@acme.test"
    profile.save()
    assert pushed(stripe, team) == [b"email=accounts%40acme.test"]
    assert sync.for_owner(team).owner_values["email"] == "accounts@acme.test"


def test_a_profile_save_changing_nothing_mapped_sends_nothing(stripe, team, django_assert_num_queries):
    profile = TeamProfile.objects.get(team=team)
    with django_assert_num_queries(2):  # the customers' read, the profile's UPDATE
        profile.save()
    with django_assert_num_queries(1):  # the profile's UPDATE alone: update_fields reads no mapped field
        profile.save(update_fields=["vat_number"])
    assert not PendingPush.objects.filter(state=PushState.PENDING).exists()


def test_a_profile_created_for_a_team_with_a_customer_sends_its_email(stripe, team):
    TeamProfile.objects.filter(team=team).delete()
    other = Team.objects.create(name="Other")
    sync.get_or_create_for(other, wait=True)
    stripe.clear_requests()
    TeamProfile.objects.create(team=other, billing_email="other@acme.test")
    assert pushed(stripe, other) == [b"email=other%40acme.test"]


def test_a_profile_saved_with_an_invalid_email_is_an_error_on_its_field_and_writes_nothing(stripe, team):
    profile = TeamProfile.objects.get(team=team)
    profile.billing_email = "not an email"
    with pytest.raises(ValidationError) as raised:
        profile.save()
    assert list(raised.value.message_dict) == ["billing_email"]
    assert TeamProfile.objects.get(team=team).billing_email == "billing@acme.test"
    assert sync.for_owner(team).email == "billing@acme.test"
    assert not PendingPush.objects.filter(state=PushState.PENDING).exists()
    with pytest.raises(ValidationError) as checked:
        sync.check_related(profile)
    assert list(checked.value.message_dict) == ["billing_email"]


def test_an_invalid_profile_does_not_block_the_teams_unrelated_saves(stripe, team):
    TeamProfile.objects.filter(team=team).update(billing_email="not an email")  # written where no save checks
    team.seats = 5
    team.save(update_fields=["seats"])
    team.plan_note = None
    team.save()  # changes nothing mapped
    team.name = "Acme Corp"
    team.save()  # sends the name, never the profile's email
    assert pushed(stripe, team) == [b"name=Team+Acme+Corp"]
    assert Team.objects.get(pk=team.pk).seats == 5
    unsent = sync.unsent(Team.objects.get(pk=team.pk))
    assert unsent == {"email": ["Enter a valid email address, like ann@example.com."]}


def test_a_value_of_a_method_stripe_refuses_is_a_non_field_error_naming_parameter_and_source(stripe, team):
    team.name = "Acme\x07"
    with pytest.raises(ValidationError) as raised:
        team.save()
    errors = raised.value.message_dict
    assert list(errors) == [NON_FIELD_ERRORS]
    assert "(Stripe's name, from customer_name)" in errors[NON_FIELD_ERRORS][0]
    assert Team.objects.get(pk=team.pk).name == "Acme"


def test_a_contacts_save_sends_the_phone_of_every_team_it_is_the_contact_of(stripe, team):
    second = Team.objects.create(name="Second", billing_contact=team.billing_contact)
    sync.get_or_create_for(second, wait=True)
    stripe.clear_requests()
    contact = Contact.objects.get(pk=team.billing_contact_id)
    contact.phone = "+33 6 00 00 00 00"
    contact.save()
    for owner in (team, second):
        sync.push(sync.for_owner(owner).pk)
    assert sorted(r.body for r in posts(stripe)) == [b"phone=%2B33+6+00+00+00+00"] * 2


def test_an_office_two_relations_away_sends_its_region_to_the_teams_it_reaches(stripe, team):
    office = Office.objects.get(contact__pk=team.billing_contact_id)
    office.region = "APAC"
    office.save()
    assert pushed(stripe, team) == [b"metadata[region]=APAC"]
    stripe.clear_requests()
    contact = Contact.objects.get(pk=team.billing_contact_id)
    contact.office = Office.objects.create(region="LATAM")
    contact.save()
    assert pushed(stripe, team) == [b"metadata[region]=LATAM"]


def test_a_team_given_another_contact_sends_its_phone_and_refuses_one_stripe_would(stripe, team):
    team.billing_contact = Contact.objects.create(phone="+44 20 0000 0000")
    team.save()
    assert pushed(stripe, team) == [b"phone=%2B44+20+0000+0000&metadata[region]="]
    team.billing_contact = Contact.objects.create(phone="+33\x07")
    with pytest.raises(ValidationError) as raised:
        team.save()
    assert list(raised.value.message_dict) == ["billing_contact"]


def test_a_contact_saved_with_a_phone_stripe_refuses_is_an_error_on_its_field(stripe, team):
    contact = Contact.objects.get(pk=team.billing_contact_id)
    contact.phone = "+33\x07"
    with pytest.raises(ValidationError) as raised:
        contact.save()
    assert list(raised.value.message_dict) == ["phone"]
    assert not PendingPush.objects.filter(state=PushState.PENDING).exists()


def test_a_profile_save_rolled_back_sends_nothing(stripe, team):
    profile = TeamProfile.objects.get(team=team)
    profile.billing_email = "accounts@acme.test"
    with pytest.raises(RuntimeError), transaction.atomic():
        profile.save()
        raise RuntimeError
    assert not PendingPush.objects.filter(state=PushState.PENDING).exists()
    assert Customer.objects.get(owner=team).email == "billing@acme.test"


def test_a_path_through_a_many_valued_relation_fails_the_check_naming_the_setting(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "OWNER_FIELDS": {"email": "members.email"}}
    with pytest.raises(SystemCheckError) as raised:
        call_command("check")
    assert "customersync.E026" in str(raised.value)
    assert "CUSTOMERSYNC['OWNER_FIELDS']['email'] is 'members.email'" in str(raised.value)
    assert "teamapp.Team.members is a many-valued relation" in str(raised.value)


def test_the_owners_and_the_customers_pages_show_a_value_not_sent(stripe, team, admin_client):
    TeamProfile.objects.filter(team=team).update(billing_email="not an email")
    customer = sync.for_owner(team)
    for url in (f"/admin/teamapp/team/{team.pk}/change/", f"/admin/customersync/customer/{customer.pk}/change/"):
        page = admin_client.get(url)
        assert page.status_code == 200
        assert "email: Enter a valid email address, like ann@example.com." in page.content.decode(), url
    TeamProfile.objects.filter(team=team).update(billing_email="billing@acme.test")
    page = admin_client.get(f"/admin/teamapp/team/{team.pk}/change/").content.decode()
    assert "Enter a valid email address" not in page


def test_an_address_changed_in_the_billing_portal_reaches_the_team_and_nothing_is_pushed_back(fake_stripe):
    team = Team.objects.create(name="Acme", city="Paris", country="FR")
    customer = sync.get_or_create_for(team, wait=True)
    event = fake_stripe.change_customer(customer.stripe_id, address={"line1": "1 Main St", "city": "Leeds"})
    assert fake_stripe.deliver(event).status_code == 200
    team.refresh_from_db()
    assert (team.street, team.city, team.postal_code, team.country) == ("1 Main St", "Leeds", "", "")
    assert fake_stripe.push_pending() == []
