"""The admin: the change form saves through the push path; failures are visible."""

import pytest
from django.urls import reverse

from customersync import sync
from customersync.models import SyncStatus
from tests.admin_forms import edit

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(admin_user):
    return admin_user


def test_change_form_save_queues_one_push_of_the_diff(stripe, client, operator, django_capture_on_commit_callbacks):
    obj = stripe.add_customer(email="old@example.com", metadata={"a": "1", "b": "2"})
    customer = sync.pull_one(obj["id"])
    client.force_login(operator)
    with django_capture_on_commit_callbacks() as callbacks:
        response = edit(client, customer, email="new@example.com", metadata={"a": "1"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert len(callbacks) == 1
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.PENDING
    assert customer.pending_params() == {"email": "new@example.com", "metadata": {"b": ""}}


def test_unchanged_form_save_queues_nothing(stripe, client, operator, django_capture_on_commit_callbacks):
    customer = sync.pull_one(stripe.add_customer(email="a@b.c", address={"city": "Paris"})["id"])
    client.force_login(operator)
    with django_capture_on_commit_callbacks() as callbacks:
        response = edit(client, customer)
    assert response.status_code == 302
    assert callbacks == []


def test_unexpressible_value_is_a_form_error_naming_the_field(stripe, client, operator):
    customer = sync.pull_one(stripe.add_customer(preferred_locales=["en"])["id"])
    client.force_login(operator)
    response = edit(client, customer, locales=[])
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "preferred_locales" in errors
    customer.refresh_from_db()
    assert customer.preferred_locales == ["en"]


def test_stripe_error_visible_in_list_and_change_page(stripe, client, operator):
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    customer.default_source = "card_missing"  # only Stripe knows it is not attached
    customer.save()
    sync.push(customer.pk)
    customer.refresh_from_db()
    from django.utils.html import escape

    message = escape(customer.sync_error["message"])
    client.force_login(operator)
    listing = client.get(reverse("admin:customersync_customer_changelist")).content.decode()
    assert "customersync-failed" in listing and message in listing and "(default_source)" in listing
    page = client.get(reverse("admin:customersync_customer_change", args=[customer.pk])).content.decode()
    assert message in page and "default_source" in page and customer.sync_error["request_id"] in page
    # The local edit is still in the form.
    assert 'value="card_missing"' in page


def test_pending_changes_panel_shows_the_params(stripe, client, operator):
    customer = sync.pull_one(stripe.add_customer(email="a@b.c")["id"])
    customer.email = "zoe@example.org"
    customer.save()
    client.force_login(operator)
    page = client.get(reverse("admin:customersync_customer_change", args=[customer.pk])).content.decode()
    assert "zoe@example.org" in page


def test_list_search_and_filter(stripe, client, operator):
    sync.pull_one(stripe.add_customer(email="findme@example.com")["id"])
    sync.pull_one(stripe.add_customer(email="other@example.com")["id"])
    client.force_login(operator)
    url = reverse("admin:customersync_customer_changelist")
    page = client.get(url, {"q": "findme"}).content.decode()
    assert "findme@example.com" in page and "other@example.com" not in page
    page = client.get(url, {"sync_status__exact": "failed"}).content.decode()
    assert "findme@example.com" not in page


def test_admin_pages_never_show_the_key(stripe, client, operator, settings):
    customer = sync.pull_one(stripe.add_customer()["id"])
    client.force_login(operator)
    for url in (
        reverse("admin:customersync_customer_changelist"),
        reverse("admin:customersync_customer_change", args=[customer.pk]),
    ):
        assert settings.TEST_API_KEY not in client.get(url).content.decode()


@pytest.mark.parametrize("field, value", [("address", "Paris"), ("metadata", ["a"]), ("preferred_locales", {"en": 1})])
def test_wrong_json_shape_from_code_is_refused_naming_the_field(stripe, field, value):
    from django.core.exceptions import ValidationError

    customer = sync.pull_one(stripe.add_customer(email="a@example.com", address={"city": "Paris"})["id"])
    setattr(customer, field, value)
    with pytest.raises(ValidationError) as info:
        customer.save()
    assert field in info.value.message_dict


def test_change_page_shows_the_sync_history(stripe, client, operator):
    from customersync.sync import RetryLater

    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    customer.name = "Bob"
    customer.save()
    stripe.inject(status=503)
    with pytest.raises(RetryLater):
        sync.push(customer.pk)
    sync.push(customer.pk)
    client.force_login(operator)
    page = client.get(reverse("admin:customersync_customer_change", args=[customer.pk])).content.decode()
    assert "Sync history" in page
    assert page.count("Will retry") == 1 and page.count("Succeeded") == 1
    assert "503" in page
    log_page = client.get(reverse("admin:customersync_pushattempt_changelist")).content.decode()
    assert customer.stripe_id in log_page or "Bob" in log_page
