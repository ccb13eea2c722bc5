"""The admin change form: every rule, every parameter, the permissions (Django test client)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from customersync import sync
from customersync.models import Customer, PendingPush, SyncStatus
from tests.admin_forms import change_url, edit, form_data

pytestmark = pytest.mark.django_db

ADDRESS = {
    "line1": "1 rue de Rivoli",
    "line2": "Apt 4",
    "city": "Paris",
    "state": None,
    "postal_code": "75001",
    "country": "FR",
}
BASE = dict(
    email="old@example.com",
    name="Old Name",
    phone="+100",
    description="old",
    business_name="Old Biz",
    individual_name="Old Ind",
    preferred_locales=["en"],
    metadata={"a": "1", "b": "2"},
    balance=100,
    invoice_prefix="OLDP",
    next_invoice_sequence=5,
    tax_exempt="exempt",
    address=ADDRESS,
    shipping={"name": "Ann", "phone": "+331", "address": ADDRESS},
    invoice_settings={
        "custom_fields": [{"name": "PO", "value": "1"}],
        "default_payment_method": "pm_old",
        "footer": "old footer",
        "rendering_options": {"amount_tax_display": "exclude_tax", "template": "inrtem_old"},
    },
)


@pytest.fixture
def operator(admin_user, client):
    client.force_login(admin_user)
    return admin_user


def mirrored(stripe, **fields):
    obj = stripe.add_customer(**fields)
    for source in ("card_old", "card_new", "ba_1", "aliacc_1"):
        stripe.attach_source(obj["id"], source)
    if "default_source" in fields:
        pass
    customer = sync.pull_one(obj["id"])
    stripe.clear_requests()
    return customer


def pushed_body(stripe, customer) -> bytes:
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    (request,) = [r for r in stripe.requests if r.method == "POST"]
    assert request.status == 200, request.summary()
    return request.body


# -- every parameter: set, change, clear ------------------------------------

A2 = {"line1": "2 quai", "city": "Lyon", "country": "FR", "postal_code": "69001"}
CASES = [
    *[
        case
        for field, new in [
            ("email", "new@example.com"),
            ("name", "Zoë"),
            ("phone", "+33 1 23"),
            ("description", "VIP / 50%"),
            ("business_name", "Acme"),
            ("individual_name", "Ann Smith"),
        ]
        for case in [
            (f"{field}-set", {}, {field: new}, None),
            (f"{field}-change", BASE, {field: new}, None),
            (f"{field}-clear", BASE, {field: ""}, f"{field}=".encode()),
        ]
    ],
    ("locales-set", {}, {"locales": ["fr", "en"]}, b"preferred_locales[0]=fr&preferred_locales[1]=en"),
    ("locales-change", BASE, {"locales": ["en", "de"]}, b"preferred_locales[0]=en&preferred_locales[1]=de"),
    ("locales-clear", BASE, {"locales": []}, "preferred_locales"),
    ("metadata-set", {}, {"metadata": {"k": "v"}}, b"metadata[k]=v"),
    ("metadata-change", BASE, {"metadata": {"a": "9", "b": "2", "c": "3"}}, b"metadata[a]=9&metadata[c]=3"),
    ("metadata-clear", BASE, {"metadata": {}}, b"metadata[a]=&metadata[b]="),
    ("balance-set", {}, {"balance": "500"}, b"balance=500"),
    ("balance-change", BASE, {"balance": "-250"}, b"balance=-250"),
    ("balance-clear", BASE, {"balance": ""}, "balance"),
    ("invoice_prefix-set", {}, {"invoice_prefix": "ACME01"}, b"invoice_prefix=ACME01"),
    ("invoice_prefix-change", BASE, {"invoice_prefix": "NEWP"}, b"invoice_prefix=NEWP"),
    ("invoice_prefix-clear", BASE, {"invoice_prefix": ""}, "invoice_prefix"),
    ("next_invoice_sequence-set", {}, {"next_invoice_sequence": "3"}, b"next_invoice_sequence=3"),
    ("next_invoice_sequence-change", BASE, {"next_invoice_sequence": "9"}, b"next_invoice_sequence=9"),
    ("next_invoice_sequence-clear", BASE, {"next_invoice_sequence": ""}, "next_invoice_sequence"),
    ("footer-set", {}, {"invoice_footer": "Thanks"}, b"invoice_settings[footer]=Thanks"),
    ("footer-change", BASE, {"invoice_footer": "Merci"}, b"invoice_settings[footer]=Merci"),
    ("footer-clear", BASE, {"invoice_footer": ""}, b"invoice_settings[footer]="),
    (
        "payment_method-set",
        {},
        {"invoice_default_payment_method": "pm_1"},
        b"invoice_settings[default_payment_method]=pm_1",
    ),
    (
        "payment_method-change",
        BASE,
        {"invoice_default_payment_method": "pm_2"},
        b"invoice_settings[default_payment_method]=pm_2",
    ),
    ("payment_method-clear", BASE, {"invoice_default_payment_method": ""}, "invoice_default_payment_method"),
    (
        "custom_fields-set",
        {},
        {"custom_fields": [("PO", "7")]},
        b"invoice_settings[custom_fields][0][name]=PO&invoice_settings[custom_fields][0][value]=7",
    ),
    (
        "custom_fields-change",
        BASE,
        {"custom_fields": [("PO", "1"), ("VAT", "FR1")]},
        b"invoice_settings[custom_fields][0][name]=PO&invoice_settings[custom_fields][0][value]=1"
        b"&invoice_settings[custom_fields][1][name]=VAT&invoice_settings[custom_fields][1][value]=FR1",
    ),
    ("custom_fields-clear", BASE, {"custom_fields": []}, b"invoice_settings[custom_fields]="),
    (
        "amount_tax_display-set",
        {},
        {"invoice_amount_tax_display": "include_inclusive_tax"},
        b"invoice_settings[rendering_options][amount_tax_display]=include_inclusive_tax",
    ),
    (
        "amount_tax_display-change",
        BASE,
        {"invoice_amount_tax_display": "include_inclusive_tax"},
        b"invoice_settings[rendering_options][amount_tax_display]=include_inclusive_tax"
        b"&invoice_settings[rendering_options][template]=inrtem_old",
    ),
    (
        "amount_tax_display-clear",
        BASE,
        {"invoice_amount_tax_display": ""},
        b"invoice_settings[rendering_options][amount_tax_display]=&invoice_settings[rendering_options][template]=inrtem_old",
    ),
    ("template-set", {}, {"invoice_template": "inrtem_1"}, b"invoice_settings[rendering_options][template]=inrtem_1"),
    (
        "rendering_options-clear",
        BASE,
        {"invoice_amount_tax_display": "", "invoice_template": ""},
        b"invoice_settings[rendering_options]=",
    ),
    ("tax_exempt-set", {}, {"tax_exempt": "exempt"}, b"tax_exempt=exempt"),
    ("tax_exempt-change", BASE, {"tax_exempt": "reverse"}, b"tax_exempt=reverse"),
    ("tax_exempt-clear", BASE, {"tax_exempt": ""}, b"tax_exempt=none"),
    (
        "address-set",
        {},
        {"address": A2},
        b"address[city]=Lyon&address[country]=FR&address[line1]=2+quai&address[postal_code]=69001",
    ),
    (
        "address-change",
        BASE,
        {"address": {"city": "Nice"}},
        b"address[city]=Nice&address[country]=FR&address[line1]=1+rue+de+Rivoli&address[line2]=Apt+4"
        b"&address[postal_code]=75001",
    ),
    ("address-clear", BASE, {"address": dict.fromkeys(ADDRESS, "")}, b"address="),
    (
        "shipping-set",
        {},
        {"shipping": {"name": "Bo", **A2}},
        b"shipping[address][city]=Lyon&shipping[address][country]=FR&shipping[address][line1]=2+quai"
        b"&shipping[address][postal_code]=69001&shipping[name]=Bo",
    ),
    (
        "shipping-change",
        BASE,
        {"shipping": {"name": "Bob"}},
        b"shipping[address][city]=Paris&shipping[address][country]=FR&shipping[address][line1]=1+rue+de+Rivoli"
        b"&shipping[address][line2]=Apt+4&shipping[address][postal_code]=75001&shipping[name]=Bob"
        b"&shipping[phone]=%2B331",
    ),
    ("shipping-clear", BASE, {"shipping": {"name": "", "phone": "", **dict.fromkeys(ADDRESS, "")}}, b"shipping="),
    ("default_source-set", {}, {"default_source": "card_new"}, b"default_source=card_new"),
    (
        "default_source-change",
        {"default_source": "card_old"},
        {"default_source": "card_new"},
        b"default_source=card_new",
    ),
    ("default_source-clear", {"default_source": "card_old"}, {"default_source": ""}, "default_source"),
    ("source", {}, {"source": "tok_visa"}, b"source=tok_visa"),
    ("card", {}, {"card": "tok_mastercard"}, b"card=tok_mastercard"),
    ("bank_account", {}, {"bank_account": "btok_1"}, b"bank_account=btok_1"),
    ("default_card", {}, {"default_card": "card_new"}, b"default_card=card_new"),
    ("default_bank_account", {}, {"default_bank_account": "ba_1"}, b"default_bank_account=ba_1"),
    ("default_alipay_account", {}, {"default_alipay_account": "aliacc_1"}, b"default_alipay_account=aliacc_1"),
    ("tax_ip_address-set", {}, {"tax_ip_address": "203.0.113.7"}, b"tax[ip_address]=203.0.113.7"),
    ("tax_ip_address-clear", {}, {"tax_ip_address_clear": True}, b"tax[ip_address]="),
    (
        "reconciliation_mode",
        {},
        {"cash_balance_reconciliation_mode": "manual"},
        b"cash_balance[settings][reconciliation_mode]=manual",
    ),
    (
        "validate_location-rides-along",
        {},
        {"address": A2, "tax_validate_location": "deferred"},
        b"address[city]=Lyon&address[country]=FR&address[line1]=2+quai&address[postal_code]=69001"
        b"&tax[validate_location]=deferred",
    ),
]


@pytest.mark.parametrize("start, changes, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_parameter_from_the_change_form(stripe, client, operator, start, changes, expected):
    customer = mirrored(stripe, **start)
    response = edit(client, customer, **changes)
    if isinstance(expected, str):  # refused: a form error on that field, nothing queued
        assert response.status_code == 200
        assert expected in response.context["adminform"].form.errors
        assert not PendingPush.objects.exists()
        return
    assert response.status_code == 302, response.context["adminform"].form.errors
    body = pushed_body(stripe, customer)
    if expected is None:  # plain set/change: exactly that one field
        (field, value), *_ = changes.items()
        from customersync.core.encoding import encode

        expected = encode({field: value}).encode()
    assert body == expected
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC
    assert customer.pending_once == {}  # write-once values clear after the push
    page = form_data(client, customer)
    assert all(page.get(name, "") == "" for name in ("source", "card", "bank_account", "tax_ip_address"))


# -- every validation rule: a valid and an invalid value ---------------------


def long_email(length: int) -> str:
    """A syntactically valid address of exactly ``length`` characters (labels of at most 63)."""
    room = length - len("ann@") - len(".com")
    labels = []
    while room > 0:
        size = min(63, room) if room != 64 else 62  # never leave a lone dot
        labels.append("b" * size)
        room -= size + 1
    email = "ann@" + ".".join(labels) + ".com"
    return email[:length] if len(email) > length else email


RULES = [
    ("invoice_prefix-lowercase", {"invoice_prefix": "acme"}, "invoice_prefix", {"invoice_prefix": "ACME"}),
    ("invoice_prefix-inner-space", {"invoice_prefix": "AC ME"}, "invoice_prefix", {"invoice_prefix": "A"}),
    ("invoice_prefix-long", {"invoice_prefix": "ABCDEFGHIJKLM"}, "invoice_prefix", {"invoice_prefix": "ABCDEFGHIJKL"}),
    ("email-invalid", {"email": "not-an-email"}, "email", {"email": "ann@example.com"}),
    ("email-too-long", {"email": long_email(513)}, "email", {"email": long_email(512)}),
    ("tax_exempt-enum", {"tax_exempt": "bogus"}, "tax_exempt", {"tax_exempt": "reverse"}),
    (
        "amount_tax_display-enum",
        {"invoice_amount_tax_display": "bogus"},
        "invoice_amount_tax_display",
        {"invoice_amount_tax_display": "exclude_tax"},
    ),
    (
        "validate_location-enum",
        {"tax_validate_location": "bogus", "name": "x"},
        "tax_validate_location",
        {"tax_validate_location": "auto", "name": "x"},
    ),
    (
        "reconciliation-enum",
        {"cash_balance_reconciliation_mode": "bogus"},
        "cash_balance_reconciliation_mode",
        {"cash_balance_reconciliation_mode": "automatic"},
    ),
    (
        "metadata-51-keys",
        {"metadata": {f"k{i}": "v" for i in range(51)}},
        "metadata",
        {"metadata": {f"k{i}": "v" for i in range(50)}},
    ),
    ("metadata-key-41", {"metadata": {"k" * 41: "v"}}, "metadata", {"metadata": {"k" * 40: "v"}}),
    ("metadata-key-brackets", {"metadata": {"a[b]": "v"}}, "metadata", {"metadata": {"a-b": "v"}}),
    ("metadata-value-501", {"metadata": {"k": "v" * 501}}, "metadata", {"metadata": {"k": "v" * 500}}),
    (
        "custom_fields-5",
        {"custom_fields": [(f"n{i}", "v") for i in range(5)]},
        "invoice_custom_fields",
        {"custom_fields": [(f"n{i}", "v") for i in range(4)]},
    ),
    (
        "custom_field-name-41",
        {"custom_fields": [("n" * 41, "v")]},
        "invoice_custom_fields",
        {"custom_fields": [("n" * 40, "v")]},
    ),
    (
        "custom_field-value-141",
        {"custom_fields": [("n", "v" * 141)]},
        "invoice_custom_fields",
        {"custom_fields": [("n", "v" * 140)]},
    ),
    (
        "custom_field-needs-value",
        {"custom_fields": [("PO", "")]},
        "invoice_custom_fields",
        {"custom_fields": [("PO", "1")]},
    ),
    ("balance-integer", {"balance": "12.5"}, "balance", {"balance": "-12"}),
    (
        "next_invoice_sequence-integer",
        {"next_invoice_sequence": "abc"},
        "next_invoice_sequence",
        {"next_invoice_sequence": "7"},
    ),
    (
        "next_invoice_sequence-at-least-1",
        {"next_invoice_sequence": "0"},
        "next_invoice_sequence",
        {"next_invoice_sequence": "2"},
    ),
    ("tax_ip_address-v4", {"tax_ip_address": "999.1.1.1"}, "tax_ip_address", {"tax_ip_address": "203.0.113.7"}),
    ("tax_ip_address-v6", {"tax_ip_address": "2001:db8::zz"}, "tax_ip_address", {"tax_ip_address": "2001:db8::1"}),
    (
        "shipping-needs-name",
        {"shipping": {"line1": "1 rue"}},
        "shipping",
        {"shipping": {"line1": "1 rue", "name": "Bo"}},
    ),
    (
        "shipping-needs-an-address",
        {"shipping": {"name": "Bo"}},
        "shipping",
        {"shipping": {"city": "Lyon", "name": "Bo"}},
    ),
]


@pytest.mark.parametrize("bad, field, good", [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_validation_rule(stripe, client, operator, bad, field, good):
    customer = mirrored(stripe, email="a@example.com")
    response = edit(client, customer, **bad)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert str(errors[field]).strip()
    assert not PendingPush.objects.exists()  # nothing reached the outbox
    customer.refresh_from_db()
    assert customer.pending_params() == {}  # nothing saved

    response = edit(client, customer, **good)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert PendingPush.objects.filter(customer=customer).exists()


def test_same_rules_hold_for_saves_from_code(stripe):
    from django.core.exceptions import ValidationError

    customer = mirrored(stripe, email="a@example.com")
    customer.invoice_prefix = "bad"
    customer.metadata = {"k" * 41: "v"}
    customer.pending_once = {"tax": {"ip_address": "nope"}}
    with pytest.raises(ValidationError) as info:
        customer.save()
    assert set(info.value.message_dict) == {"invoice_prefix", f"metadata[{'k' * 41}]", "tax[ip_address]"}
    assert not PendingPush.objects.exists()


def test_stripe_error_is_shown_on_the_field_its_param_maps_to(stripe, client, operator):
    customer = mirrored(stripe)
    stripe.inject(
        status=400,
        error={
            "type": "invalid_request_error",
            "message": "Invalid footer: too long for Stripe",
            "param": "invoice_settings[footer]",
        },
    )
    response = edit(client, customer, invoice_footer="x" * 30)
    assert response.status_code == 302
    assert sync.push(customer.pk).outcome is sync.Outcome.FAILED
    page = client.get(change_url(customer))
    errors = page.context["adminform"].form.errors
    assert "Invalid footer: too long for Stripe" in str(errors["invoice_footer"])
    assert page.context["adminform"].form["invoice_footer"].value() == "x" * 30  # the edit is kept


def test_pending_panel_shows_old_and_new_values(stripe, client, operator):
    customer = mirrored(stripe, email="old@example.com", metadata={"a": "1", "b": "2"}, address=ADDRESS)
    edit(client, customer, email="new@example.com", metadata={"a": "1"}, address={"city": "Lyon"})
    panel = client.get(change_url(customer)).content.decode()
    panel = panel[panel.index("customersync-pending") :]
    panel = panel[: panel.index("</table>")]
    for param, old, new in [
        ("email", "old@example.com", "new@example.com"),
        ("metadata[b]", "2", "(unset)"),
        ("address[city]", "Paris", "Lyon"),
    ]:
        assert f"<td><code>{param}</code></td><td>{old}</td><td>&rarr;</td><td>{new}</td>" in panel
    assert "metadata[a]" not in panel


# -- permissions --------------------------------------------------------------


@pytest.fixture
def staff(client):
    """A staff user who may view and change customers, without push or pull."""
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_customer", "change_customer"]))
    client.force_login(user)
    return user


def grant(user, *codenames):
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)  # fresh permission cache


def test_without_permissions_actions_and_buttons_are_hidden_and_refused(stripe, client, staff):
    customer = mirrored(stripe, name="Ann")
    listing = client.get(reverse("admin:customersync_customer_changelist")).content.decode()
    assert "push_now" not in listing and "refresh_from_stripe" not in listing and "retry_failed" not in listing
    page = client.get(change_url(customer)).content.decode()
    assert 'name="customersync-push"' not in page and 'name="customersync-refresh"' not in page
    # Forged POSTs.
    response = client.post(
        reverse("admin:customersync_customer_changelist"),
        {"action": "push_now", "_selected_action": [customer.pk]},
    )
    assert not PendingPush.objects.exists()
    assert response.status_code in (200, 302)
    for name in ("push", "retry", "refresh"):
        response = client.post(reverse(f"admin:customersync_customer_{name}", args=[customer.pk]))
        assert response.status_code == 403
    assert not PendingPush.objects.exists() and stripe.requests == []


def test_push_permission_allows_push_and_retry(stripe, client, staff):
    client.force_login(grant(staff, "push_customer"))
    first, second, third = mirrored(stripe, name="A"), mirrored(stripe, name="B"), mirrored(stripe, name="C")
    listing = client.get(reverse("admin:customersync_customer_changelist")).content.decode()
    assert "push_now" in listing and "refresh_from_stripe" not in listing
    # Edited without save(), as a QuerySet.update() or a data migration does.
    Customer.objects.filter(pk__in=[first.pk, second.pk]).update(description="bulk")
    response = client.post(
        reverse("admin:customersync_customer_changelist"),
        {"action": "push_now", "_selected_action": [first.pk, second.pk, third.pk]},
        follow=True,
    )
    assert "Queued pushes of 2 customers with changes to send." in response.content.decode()
    assert PendingPush.objects.count() == 2
    Customer.objects.filter(pk=first.pk).update(sync_status=SyncStatus.FAILED)
    response = client.post(reverse("admin:customersync_customer_retry", args=[first.pk]), follow=True)
    assert "Queued a retry of 1 failed customer." in response.content.decode()
    assert Customer.objects.get(pk=first.pk).sync_status == SyncStatus.PENDING
    assert client.post(reverse("admin:customersync_customer_refresh", args=[first.pk])).status_code == 403


def test_pull_permission_allows_refresh(stripe, client, staff):
    client.force_login(grant(staff, "pull_customer"))
    customer = mirrored(stripe, name="Ann")
    stripe.update_customer_directly(customer.stripe_id, name="Changed in Stripe")
    response = client.post(reverse("admin:customersync_customer_refresh", args=[customer.pk]), follow=True)
    assert "Refreshed 1 customer from Stripe." in response.content.decode()
    customer.refresh_from_db()
    assert customer.name == "Changed in Stripe"
    assert client.post(reverse("admin:customersync_customer_push", args=[customer.pk])).status_code == 403


def test_buttons_accept_post_only(stripe, client, operator):
    customer = mirrored(stripe)
    assert client.get(reverse("admin:customersync_customer_push", args=[customer.pk])).status_code == 405
