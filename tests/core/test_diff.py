"""The diff, table-driven over every parameter: set, change, clear -> exact body or error.

Pure: no database. Bodies are compared as the exact wire string.
"""

import copy

import pytest

from customersync.core.diff import diff
from customersync.core.encoding import encode
from customersync.exceptions import ParamError
from tests.contract import customer_fixture

EMPTY = customer_fixture()  # Stripe's own example: mostly unset

ADDRESS = {"city": "Paris", "country": "FR", "line1": "1 rue", "line2": "Apt 4", "postal_code": "75001", "state": None}
BASE = {
    **copy.deepcopy(EMPTY),
    "email": "old@example.com",
    "name": "Old Name",
    "phone": "+100",
    "description": "old",
    "business_name": "Old Biz",
    "individual_name": "Old Ind",
    "balance": 100,
    "invoice_prefix": "OLDP",
    "next_invoice_sequence": 5,
    "tax_exempt": "exempt",
    "preferred_locales": ["en"],
    "metadata": {"a": "1", "b": "2"},
    "address": ADDRESS,
    "shipping": {"name": "Ann", "phone": "+331", "address": ADDRESS, "carrier": None, "tracking_number": None},
    "invoice_settings": {
        "custom_fields": [{"name": "PO", "value": "1"}],
        "default_payment_method": "pm_old",
        "footer": "old footer",
        "rendering_options": {"amount_tax_display": "exclude_tax", "template": None},
    },
    "default_source": "card_old",
}

ADDRESS_WIRE = "[city]=Paris&{p}[country]=FR&{p}[line1]=1+rue&{p}[line2]=Apt+4&{p}[postal_code]=75001"


def inv(**kw):
    return {"invoice_settings": kw}


# (id, confirmed, desired, expected body or ParamError param)
CASES = [
    # plain strings: set, change, clear with ''
    *[
        case
        for field, new in [
            ("email", "a+b@x.io"),
            ("name", "Zoë"),
            ("phone", "+33 1 23"),
            ("description", "VIP / 50%"),
            ("business_name", "Acme"),
            ("individual_name", "Ann Smith"),
        ]
        for case in [
            (f"{field}-set", EMPTY, {field: new}, encode({field: new})),
            (f"{field}-change", BASE, {field: new}, encode({field: new})),
            (f"{field}-clear", BASE, {field: ""}, f"{field}="),
            (f"{field}-clear-none", BASE, {field: None}, f"{field}="),
            (f"{field}-same", BASE, {field: BASE[field]}, ""),
        ]
    ],
    # lists sent whole; an emptied preferred_locales is refused (no empty list on the wire)
    (
        "preferred_locales-set",
        EMPTY,
        {"preferred_locales": ["fr", "en"]},
        "preferred_locales[0]=fr&preferred_locales[1]=en",
    ),
    (
        "preferred_locales-change",
        BASE,
        {"preferred_locales": ["en", "de"]},
        "preferred_locales[0]=en&preferred_locales[1]=de",
    ),
    (
        "preferred_locales-reorder",
        BASE | {"preferred_locales": ["en", "fr"]},
        {"preferred_locales": ["fr", "en"]},
        "preferred_locales[0]=fr&preferred_locales[1]=en",
    ),
    ("preferred_locales-clear", BASE, {"preferred_locales": []}, ParamError("preferred_locales", "")),
    # metadata per key
    ("metadata-set", EMPTY, {"metadata": {"k": "v"}}, "metadata[k]=v"),
    ("metadata-change", BASE, {"metadata": {"a": "9", "b": "2", "c": "3"}}, "metadata[a]=9&metadata[c]=3"),
    ("metadata-remove-key", BASE, {"metadata": {"a": "1"}}, "metadata[b]="),
    ("metadata-clear", BASE, {"metadata": {}}, "metadata[a]=&metadata[b]="),
    ("metadata-same", BASE, {"metadata": {"b": "2", "a": "1"}}, ""),
    # integers: not clearable
    ("balance-set", EMPTY, {"balance": 500}, "balance=500"),
    ("balance-change", BASE, {"balance": -250}, "balance=-250"),
    ("balance-zero", BASE, {"balance": 0}, "balance=0"),
    ("balance-clear", BASE, {"balance": None}, ParamError("balance", "")),
    ("balance-not-integer", BASE, {"balance": "abc"}, ParamError("balance", "")),
    (
        "next_invoice_sequence-set",
        EMPTY | {"next_invoice_sequence": None},
        {"next_invoice_sequence": 3},
        "next_invoice_sequence=3",
    ),
    ("next_invoice_sequence-change", BASE, {"next_invoice_sequence": 9}, "next_invoice_sequence=9"),
    ("next_invoice_sequence-clear", BASE, {"next_invoice_sequence": None}, ParamError("next_invoice_sequence", "")),
    # invoice_prefix: not clearable
    ("invoice_prefix-set", EMPTY | {"invoice_prefix": None}, {"invoice_prefix": "ACME1"}, "invoice_prefix=ACME1"),
    ("invoice_prefix-change", BASE, {"invoice_prefix": "NEWP"}, "invoice_prefix=NEWP"),
    ("invoice_prefix-clear", BASE, {"invoice_prefix": ""}, ParamError("invoice_prefix", "")),
    # tax_exempt: enum, emptyable (unset reads "none")
    ("tax_exempt-set", EMPTY, {"tax_exempt": "exempt"}, "tax_exempt=exempt"),
    ("tax_exempt-change", BASE, {"tax_exempt": "reverse"}, "tax_exempt=reverse"),
    ("tax_exempt-clear", BASE, {"tax_exempt": ""}, "tax_exempt=none"),
    ("tax_exempt-unset-is-none", EMPTY, {"tax_exempt": None}, ""),
    # address: sent whole; removed sub-fields sent empty; '' unsets all
    ("address-set", EMPTY, {"address": {"city": "Paris"}}, "address[city]=Paris"),
    (
        "address-change-city",
        BASE,
        {"address": {**ADDRESS, "city": "Lyon"}},
        "address" + ADDRESS_WIRE.format(p="address").replace("Paris", "Lyon"),
    ),
    (
        "address-remove-line2",
        BASE,
        {"address": {**ADDRESS, "line2": None}},
        "address" + ADDRESS_WIRE.format(p="address").replace("Apt+4", ""),
    ),
    ("address-clear", BASE, {"address": None}, "address="),
    ("address-clear-all-blank", BASE, {"address": {"city": "", "line1": None}}, "address="),
    ("address-same-other-shape", BASE, {"address": {k: v for k, v in ADDRESS.items() if v}}, ""),
    # shipping: sent whole, nested address
    (
        "shipping-set",
        EMPTY,
        {"shipping": {"name": "Bo", "address": {"line1": "x"}}},
        "shipping[address][line1]=x&shipping[name]=Bo",
    ),
    (
        "shipping-change-name",
        BASE,
        {"shipping": {**BASE["shipping"], "name": "Bob"}},
        "shipping[address]" + ADDRESS_WIRE.format(p="shipping[address]") + "&shipping[name]=Bob&shipping[phone]=%2B331",
    ),
    ("shipping-clear", BASE, {"shipping": ""}, "shipping="),
    # invoice_settings: each sub-parameter on its own
    (
        "custom_fields-set",
        EMPTY,
        inv(custom_fields=[{"name": "PO", "value": "7"}]),
        "invoice_settings[custom_fields][0][name]=PO&invoice_settings[custom_fields][0][value]=7",
    ),
    (
        "custom_fields-change",
        BASE,
        inv(custom_fields=[{"name": "PO", "value": "1"}, {"name": "VAT", "value": "FR1"}]),
        "invoice_settings[custom_fields][0][name]=PO&invoice_settings[custom_fields][0][value]=1"
        "&invoice_settings[custom_fields][1][name]=VAT&invoice_settings[custom_fields][1][value]=FR1",
    ),
    ("custom_fields-clear", BASE, inv(custom_fields=[]), "invoice_settings[custom_fields]="),
    (
        "default_payment_method-set",
        EMPTY,
        inv(default_payment_method="pm_1"),
        "invoice_settings[default_payment_method]=pm_1",
    ),
    (
        "default_payment_method-change",
        BASE,
        inv(default_payment_method="pm_2"),
        "invoice_settings[default_payment_method]=pm_2",
    ),
    (
        "default_payment_method-clear",
        BASE,
        inv(default_payment_method=None),
        ParamError("invoice_settings[default_payment_method]", ""),
    ),
    ("footer-set", EMPTY, inv(footer="Thanks"), "invoice_settings[footer]=Thanks"),
    ("footer-change", BASE, inv(footer="Merci"), "invoice_settings[footer]=Merci"),
    ("footer-clear", BASE, inv(footer=""), "invoice_settings[footer]="),
    (
        "rendering_options-set",
        EMPTY,
        inv(rendering_options={"amount_tax_display": "include_inclusive_tax"}),
        "invoice_settings[rendering_options][amount_tax_display]=include_inclusive_tax",
    ),
    (
        "rendering_options-change",
        BASE,
        inv(rendering_options={"template": "inrtem_1"}),
        "invoice_settings[rendering_options][amount_tax_display]=&invoice_settings[rendering_options][template]=inrtem_1",
    ),
    ("rendering_options-clear", BASE, inv(rendering_options=None), "invoice_settings[rendering_options]="),
    (
        "invoice_settings-two-subparams",
        BASE,
        inv(footer="F", custom_fields=[{"name": "PO", "value": "1"}]),
        "invoice_settings[footer]=F",
    ),
    # default_source: mirrored, not clearable
    ("default_source-set", EMPTY, {"default_source": "card_1"}, "default_source=card_1"),
    ("default_source-change", BASE, {"default_source": "card_2"}, "default_source=card_2"),
    (
        "default_source-expanded-same",
        BASE | {"default_source": {"id": "card_old", "object": "card"}},
        {"default_source": "card_old"},
        "",
    ),
    ("default_source-clear", BASE, {"default_source": ""}, ParamError("default_source", "")),
    # a value of the wrong type is refused naming its param: never sent as a repr, unset or dropped
    ("name-object", BASE, {"name": {"nested": 1}}, ParamError("name", "")),
    ("footer-object", BASE, inv(footer={"nested": 1}), ParamError("invoice_settings[footer]", "")),
    ("address-line1-object", EMPTY, {"address": {"line1": {"nested": 1}}}, ParamError("address[line1]", "")),
    ("address-unknown-key", EMPTY, {"address": {"line3": "x"}}, ParamError("address[line3]", "")),
    ("address-not-an-object", BASE, {"address": "1 rue"}, ParamError("address", "")),
    ("metadata-not-a-map", BASE, {"metadata": "a=1"}, ParamError("metadata", "")),
    ("metadata-value-object", BASE, {"metadata": {"a": {"x": 1}}}, ParamError("metadata[a]", "")),
    ("locales-not-text", BASE, {"preferred_locales": ["fr", 5]}, ParamError("preferred_locales", "")),
    ("custom_fields-item-text", BASE, inv(custom_fields=["PO"]), ParamError("invoice_settings[custom_fields]", "")),
    ("balance-float", BASE, {"balance": 12.5}, ParamError("balance", "")),
    # a key Stripe reported itself (read-only, never sent) is no error while it is unchanged
    (
        "shipping-stripes-own-keys",
        BASE,
        {"shipping": {**BASE["shipping"], "name": "Bo"}},
        "shipping[address]" + ADDRESS_WIRE.format(p="shipping[address]") + "&shipping[name]=Bo&shipping[phone]=%2B331",
    ),
    (
        "shipping-stripes-own-key-changed",
        BASE,
        {"shipping": {**BASE["shipping"], "carrier": "UPS"}},
        ParamError("shipping[carrier]", ""),
    ),
]

ONCE_CASES = [
    # write-once values: sent when given, never compared with the mirror
    ("source", {"source": "tok_visa"}, "source=tok_visa"),
    ("card", {"card": "tok_mastercard"}, "card=tok_mastercard"),
    ("bank_account", {"bank_account": "btok_1"}, "bank_account=btok_1"),
    ("default_card", {"default_card": "card_1"}, "default_card=card_1"),
    ("default_bank_account", {"default_bank_account": "ba_1"}, "default_bank_account=ba_1"),
    ("default_alipay_account", {"default_alipay_account": "aliacc_1"}, "default_alipay_account=aliacc_1"),
    (
        "reconciliation_mode",
        {"cash_balance": {"settings": {"reconciliation_mode": "manual"}}},
        "cash_balance[settings][reconciliation_mode]=manual",
    ),
    ("tax-ip_address-set", {"tax": {"ip_address": "2001:db8::1"}}, "tax[ip_address]=2001%3Adb8%3A%3A1"),
    ("tax-ip_address-clear", {"tax": {"ip_address": ""}}, "tax[ip_address]="),
    ("empty-token-sends-nothing", {"source": ""}, ""),
    # request options alone send nothing
    ("expand-alone", {"expand": ["default_source"]}, ""),
    ("validate_location-alone", {"tax": {"validate_location": "immediately"}}, ""),
    ("validate-alone", {"validate": True}, ""),
]


@pytest.mark.parametrize("confirmed, desired, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_diff_body(confirmed, desired, expected):
    if isinstance(expected, ParamError):
        with pytest.raises(ParamError) as info:
            diff(confirmed, desired)
        assert info.value.param == expected.param
        assert expected.param in str(info.value)
    else:
        assert encode(diff(confirmed, desired)) == expected


@pytest.mark.parametrize("once, expected", [c[1:] for c in ONCE_CASES], ids=[c[0] for c in ONCE_CASES])
def test_write_once_and_options(once, expected):
    assert encode(diff(BASE, {"email": BASE["email"]}, once)) == expected


@pytest.mark.parametrize(
    "once, param",
    [
        ({"foo": "x"}, "pending_once[foo]"),
        ({"email": "a@b.c"}, "pending_once[email]"),
        ({"tax": {"ip": "1.2.3.4"}}, "pending_once[tax][ip]"),
        ({"source": {"id": "tok_visa"}}, "source"),
        ({"expand": "default_source"}, "expand"),
        ({"validate": "yes"}, "validate"),
    ],
)
def test_write_once_values_of_the_wrong_type_or_unknown_are_refused(once, param):
    with pytest.raises(ParamError) as info:
        diff(BASE, {"email": "new@example.com"}, once)
    assert info.value.param == param


def test_options_ride_along_with_a_change():
    once = {"expand": ["default_source"], "tax": {"validate_location": "deferred"}, "validate": True}
    assert encode(diff(BASE, {"address": {"city": "Nice"}}, once)) == (
        "address[city]=Nice&address[country]=&address[line1]=&address[line2]=&address[postal_code]="
        "&tax[validate_location]=deferred&expand[0]=default_source&validate=true"
    )


def test_nothing_changed_is_empty():
    desired = {k: BASE[k] for k in ("email", "name", "metadata", "address", "shipping", "invoice_settings", "balance")}
    assert diff(BASE, desired) == {}


def test_missing_keys_are_not_managed():
    assert diff(BASE, {}) == {}


def test_several_fields_in_table_order():
    desired = {"metadata": {"a": "1"}, "email": "new@example.com", "address": {**ADDRESS, "city": "Lyon"}}
    params = diff(BASE, desired)
    assert list(params) == ["email", "metadata", "address"]
    assert params["metadata"] == {"b": ""}


def test_no_confirmed_state_sends_every_set_field():
    assert encode(diff(None, {"email": "a@b.c", "metadata": {"k": "v"}, "name": ""})) == "email=a%40b.c&metadata[k]=v"


BODY_CASES = [c for c in CASES if not isinstance(c[3], ParamError) and c[3]]


@pytest.mark.parametrize("confirmed, desired", [c[1:3] for c in BODY_CASES], ids=[c[0] for c in BODY_CASES])
def test_every_diff_body_is_accepted_and_reaches_the_desired_state(stripe, confirmed, desired):
    """Send each body to a server with Stripe's semantics: it is accepted and leaves
    the customer exactly as desired (a diff of the result against desired is empty)."""
    from django.conf import settings

    from customersync.stripe.client import StripeClient

    fields = {k: v for k, v in confirmed.items() if k not in ("id", "object", "discount", "created", "livemode")}
    customer = stripe.add_customer(**fields)
    for source in ("card_1", "card_2"):
        stripe.attach_source(customer["id"], source)
    client = StripeClient(settings.TEST_API_KEY, api_base=stripe.url)
    result = client.update_customer(customer["id"], diff(customer, desired))
    assert diff(result, desired) == {}
