"""The site's own admin of its owner model, with ``OwnerAdminMixin`` (and forms with ``OwnerFormMixin``).

Runs on whichever owner model the settings name: the organization admin
(no fieldsets declared) by default, Django's ``UserAdmin`` (declared
fieldsets) with ``CUSTOMERSYNC_TEST_OWNER=user``. Pushes run in-process;
``test_owner_browser.py`` runs them in a real worker.
"""

from __future__ import annotations

import os
from html.parser import HTMLParser

import pytest
from django import forms
from django.contrib import admin
from django.urls import reverse
from django.utils.html import escape

from customersync import sync
from customersync.admin.owner import PANEL_FIELDS, OwnerAdminMixin, OwnerFormMixin
from customersync.models import Customer, PendingPush, PushState, SyncStatus
from tests.admin_forms import form_data_at
from tests.owners import field, make_owner, owner_model

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(os.environ.get("CUSTOMERSYNC_TEST_OWNER") == "none", reason="the site has no owner model"),
]

ADDRESS = {"street": "1 rue de Rivoli", "city": "Paris", "postal_code": "75001", "country": "FR"}
# Django's EmailField takes it (localhost is on its allow list); Stripe does not.
LOCAL_EMAIL = "billing@localhost"
STRIPES_EMAIL_RULE = "Enter a valid email address, like ann@example.com."


@pytest.fixture
def linked(stripe):
    """An owner whose customer Stripe created; the fake server's log emptied."""
    owner = make_owner("Acme", **{field("email"): "billing@acme.test", **ADDRESS})
    customer = sync.get_or_create_for(owner, wait=True)
    stripe.clear_requests()
    return owner, customer


def owner_url(owner) -> str:
    opts = owner._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[owner.pk])


def customer_url(customer) -> str:
    return reverse("admin:customersync_customer_change", args=[customer.pk])


def edit_owner(client, owner, **changes):
    """GET the owner's change form, change ``changes`` (owner fields), POST it."""
    data = form_data_at(client, owner_url(owner), f"{owner._meta.model_name}_form")
    data.update(changes)
    return client.post(owner_url(owner), data)


def fail_push(stripe, owner, customer, *, email="bounce@acme.test", **error):
    """The owner's new email saved, and Stripe refusing the push that sends it."""
    setattr(owner, field("email"), email)
    owner.save()
    stripe.inject(
        status=400,
        error={
            "type": "invalid_request_error",
            "code": "email_invalid",
            "param": "email",
            "message": "This mailbox does not take invoices.",
            **error,
        },
    )
    sync.push(customer.pk)
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.FAILED, customer.sync_error
    return customer.sync_error


def posts(stripe):
    return [r for r in stripe.requests if r.method == "POST"]


class _Element(HTMLParser):
    """The text and links inside the first element carrying a CSS class."""

    def __init__(self, css_class: str) -> None:
        super().__init__(convert_charrefs=True)
        self.css_class, self.tag, self.depth, self.done = css_class, None, 0, False
        self.text: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.done:
            return
        if self.tag is None:
            if self.css_class in (attrs.get("class") or "").split():
                self.tag, self.depth = tag, 1
            return
        if tag == self.tag:
            self.depth += 1
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])

    def handle_endtag(self, tag):
        if self.tag is not None and not self.done and tag == self.tag:
            self.depth -= 1
            self.done = self.depth == 0

    def handle_data(self, data):
        if self.tag is not None and not self.done:
            self.text.append(data)


def element(page: str, css_class: str) -> _Element:
    found = _Element(css_class)
    found.feed(page)
    assert found.tag is not None, f"no element with class {css_class!r} on the page"
    return found


def row_text(page: str, name: str) -> str:
    """The text of the admin's row for field ``name`` (its label, value or input, and its errors)."""
    return " ".join(" ".join(element(page, f"field-{name}").text).split())


# -- values Stripe would refuse are form errors -----------------------------------------------


def test_a_valid_edit_saves_the_owner_and_queues_one_push_of_it(linked, stripe, admin_client):
    owner, customer = linked
    response = edit_owner(admin_client, owner, **{field("email"): "accounts@acme.test"})
    assert response.status_code == 302, response.content.decode()[:3000]
    owner.refresh_from_db()
    assert getattr(owner, field("email")) == "accounts@acme.test"
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.PENDING
    assert PendingPush.objects.filter(customer=customer, state=PushState.PENDING).count() == 1
    sync.push(customer.pk)
    (request,) = posts(stripe)
    assert (request.path, request.body) == (f"/v1/customers/{customer.stripe_id}", b"email=accounts%40acme.test")


def test_an_email_stripe_refuses_is_an_error_on_billing_email_and_nothing_is_saved(linked, stripe, admin_client):
    owner, customer = linked
    assert forms.EmailField().clean(LOCAL_EMAIL) == LOCAL_EMAIL  # so the error below is the mixin's
    response = edit_owner(admin_client, owner, **{field("email"): LOCAL_EMAIL, "city": "Lyon"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field("email"): [STRIPES_EMAIL_RULE]}
    page = response.content.decode()
    assert STRIPES_EMAIL_RULE in row_text(page, field("email"))
    assert "errornote" in page  # the admin's "Please correct the error below."
    owner.refresh_from_db()
    assert (getattr(owner, field("email")), owner.city) == ("billing@acme.test", "Paris")
    customer.refresh_from_db()
    assert (customer.email, customer.sync_status) == ("billing@acme.test", SyncStatus.IN_SYNC)
    assert not PendingPush.objects.filter(customer=customer, state=PushState.PENDING).exists()
    sync.push(customer.pk)
    assert stripe.requests == []


def test_owner_form_mixin_in_a_sites_own_form(linked):
    owner, _ = linked
    the_model = owner_model()

    class BillingForm(OwnerFormMixin, forms.ModelForm):
        class Meta:
            model = the_model
            fields = [field("email")]

    class CityForm(OwnerFormMixin, forms.ModelForm):
        class Meta:
            model = the_model
            fields = ["city"]

    form = BillingForm({field("email"): LOCAL_EMAIL}, instance=the_model.objects.get(pk=owner.pk))
    assert not form.is_valid()
    assert form.errors == {field("email"): [STRIPES_EMAIL_RULE]}
    assert BillingForm({field("email"): "new@acme.test"}, instance=the_model.objects.get(pk=owner.pk)).is_valid()
    # A form without the field: the message is the form's, named by the field's label.
    instance = the_model.objects.get(pk=owner.pk)
    setattr(instance, field("email"), LOCAL_EMAIL)  # set by code before the form
    form = CityForm({"city": "Lyon"}, instance=instance)
    assert not form.is_valid()
    assert form.non_field_errors() == [f"Billing email: {STRIPES_EMAIL_RULE}"]


# -- the Stripe customer section --------------------------------------------------------------


def test_section_shows_stripes_refusal_the_pending_push_and_the_link(linked, stripe, admin_client, settings):
    owner, customer = linked
    error = fail_push(stripe, owner, customer)
    page = admin_client.get(owner_url(owner)).content.decode()
    assert "Failed" in row_text(page, "customersync_status")
    assert "customersync-failed" in page
    shown = row_text(page, "customersync_error")
    assert "Stripe answered:" in shown
    assert "This mailbox does not take invoices." in shown and "email_invalid" in shown and "Param email" in shown
    assert error["request_id"] not in shown  # message, code and param only
    assert "bounce@acme.test" in row_text(page, "customersync_pending")
    link = element(page, "field-customersync_customer")
    assert link.hrefs == [customer_url(customer)] and customer.stripe_id in "".join(link.text)
    assert settings.TEST_API_KEY not in page


def test_stripes_refusal_is_shown_on_the_owner_field_it_concerns(linked, stripe, admin_client):
    owner, customer = linked
    fail_push(stripe, owner, customer)
    response = admin_client.get(owner_url(owner))
    expected = "Stripe refused the last push (email_invalid): This mailbox does not take invoices."
    assert response.context["adminform"].form.errors == {field("email"): [expected]}
    page = response.content.decode()
    assert expected in row_text(page, field("email"))
    assert "errornote" not in page  # nothing the operator typed is wrong
    # Fixing the value there clears it once Stripe takes the push.
    response = edit_owner(admin_client, owner, **{field("email"): "accounts@acme.test"})
    assert response.status_code == 302
    stripe.clear_requests()
    sync.push(customer.pk)
    (request,) = posts(stripe)
    assert request.body == b"email=accounts%40acme.test"
    response = admin_client.get(owner_url(owner))
    assert not response.context["adminform"].form.errors
    assert "In sync" in row_text(response.content.decode(), "customersync_status")


def test_a_refusal_about_a_parameter_no_owner_field_gives_stays_in_the_section(linked, stripe, admin_client):
    owner, customer = linked
    fail_push(stripe, owner, customer, param="invoice_settings[default_payment_method]", code="resource_missing")
    response = admin_client.get(owner_url(owner))
    assert not response.context["adminform"].form.errors
    assert "invoice_settings[default_payment_method]" in row_text(response.content.decode(), "customersync_error")


def test_section_shows_a_pending_owner_edit(linked, admin_client):
    owner, _ = linked
    setattr(owner, field("email"), "accounts@acme.test")
    owner.save()
    page = admin_client.get(owner_url(owner)).content.decode()
    assert "Pending" in row_text(page, "customersync_status")
    assert row_text(page, "customersync_pending").endswith("email billing@acme.test → accounts@acme.test")
    assert row_text(page, "customersync_error").endswith("-")


def test_section_of_an_owner_without_a_customer(admin_client):
    owner = make_owner("Nobody")
    page = admin_client.get(owner_url(owner)).content.decode()
    assert "No Stripe customer yet" in row_text(page, "customersync_status")
    assert element(page, "field-customersync_customer").hrefs == []
    assert not Customer.objects.exists()


def test_section_comes_last_once_whatever_the_sites_fieldsets(linked, admin_client, rf, admin_user):
    owner, _ = linked
    fieldsets = admin_client.get(owner_url(owner)).context["adminform"].fieldsets
    assert fieldsets[-1] == ("Stripe customer", {"fields": PANEL_FIELDS, "classes": ("customersync",)})
    assert not any(set(PANEL_FIELDS) & set(opts["fields"]) for _, opts in fieldsets[:-1])

    class Declared(OwnerAdminMixin, admin.ModelAdmin):
        fieldsets = [
            (None, {"fields": [field("email"), (field("phone"), "customersync_status"), "customersync_pending"]})
        ]

    request = rf.get("/")
    request.user = admin_user
    model_admin = Declared(owner_model(), admin.site)
    got = model_admin.get_fieldsets(request, owner)
    assert got[0] == (None, {"fields": [field("email"), field("phone")]})
    assert got[1][0] == "Stripe customer" and len(got) == 2
    assert model_admin.get_fieldsets(request, None) == Declared.fieldsets  # an add page has no customer yet


def test_stripes_texts_are_escaped(linked, stripe, admin_client):
    owner, customer = linked
    message = '<script>alert("owned")</script><b>bold</b>'
    fail_push(stripe, owner, customer, message=message, code="<i>code</i>")
    page = admin_client.get(owner_url(owner)).content.decode()
    assert "<script>alert" not in page and "<b>bold</b>" not in page and "<i>code</i>" not in page
    assert page.count(escape(message)) == 2  # on the field and in the section
    assert message in row_text(page, field("email")) and message in row_text(page, "customersync_error")


# -- customersync's Customer page names the owner ----------------------------------------------


def test_customer_page_links_to_the_owners_page(linked, admin_client):
    owner, customer = linked
    page = admin_client.get(customer_url(customer)).content.decode()
    row = element(page, "field-owner_link")
    assert row.hrefs == [owner_url(owner)] and str(owner) in "".join(row.text)


def test_customer_page_names_the_owner_without_a_link_when_its_model_is_not_in_the_admin(linked, admin_client):
    owner, customer = linked
    model = owner_model()
    registered = type(admin.site._registry[model])
    admin.site.unregister(model)
    try:
        page = admin_client.get(customer_url(customer)).content.decode()
    finally:
        admin.site.register(model, registered)
    row = element(page, "field-owner_link")
    assert row.hrefs == [] and str(owner) in "".join(row.text)
