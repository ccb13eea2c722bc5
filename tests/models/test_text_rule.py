"""One text rule for every way text arrives: set from code, in a webhook event, on a pull page.

A lone surrogate, a NUL or a control character (anything of C0, DEL and C1 but tab, line feed
and carriage return) is refused the same way on each path: ``save()`` and ``full_clean()`` raise
a ``ValidationError`` naming the field, an event is a 400 naming the part, a pull skips that
customer and stores the rest of its page. Text with tabs, line breaks, accents and emoji passes
all three.
"""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.forms.models import model_to_dict

from customersync import sync
from customersync.models import Customer, PendingPush, WebhookEvent
from customersync.models.columns import text_fault
from tests.pull.test_mirror import deliver, event, signed

pytestmark = pytest.mark.django_db

# (id, the text, its fault)
REFUSED = [
    ("lone-high-surrogate", "Ann\ud800", "surrogate"),
    ("lone-low-surrogate", "\udfffAnn", "surrogate"),
    ("nul", "Ann\x00", "nul"),
    ("escape", "Ann\x1b[31m", "control"),
    ("bell", "Ann\x07", "control"),
    ("vertical-tab", "Ann\x0bB", "control"),
    ("delete", "Ann\x7f", "control"),
    ("c1-next-line", "Ann\x85", "control"),
]
ACCEPTED = ["Ann\tB", "Ann\nB", "Ann\r\nB", "Zoë Ørsted", "Ann 😀", "\u2028"]

# (where the text goes: Stripe's param, the customer's fields from it, the event's part)
PLACES = {
    "name": ("name", lambda text: {"name": text}, "data.object.name"),
    "description": ("description", lambda text: {"description": text}, "data.object.description"),
    "address-line1": (
        "address[line1]",
        lambda text: {"address": {"line1": text, "city": "Paris"}},
        "data.object.address.line1",
    ),
    "metadata-value": ("metadata[plan]", lambda text: {"metadata": {"plan": text}}, "data.object.metadata.plan"),
    "metadata-key": ("metadata", lambda text: {"metadata": {text: "pro"}}, "data.object.metadata"),
}
CASES = [(f"{place}-{rid}", place, text) for place in PLACES for rid, text, _fault in REFUSED]


@pytest.mark.parametrize(("text", "fault"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_the_rule_names_each_fault(text, fault):
    assert text_fault(text) == fault


@pytest.mark.parametrize("text", ACCEPTED)
def test_the_rule_takes_text_with_tabs_line_breaks_accents_and_emoji(text):
    assert text_fault(text) is None


def mirrored(stripe) -> Customer:
    obj = stripe.add_customer(name="Ann", email="a@example.com", metadata={"plan": "basic"})
    customer = sync.pull_one(obj["id"])
    stripe.clear_requests()
    return customer


@pytest.mark.parametrize("how", ["save", "full_clean"])
@pytest.mark.parametrize(("place", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_from_code_a_validation_error_names_the_field(stripe, how, place, text):
    param, fields, _part = PLACES[place]
    customer = mirrored(stripe)
    before = model_to_dict(Customer.objects.get(pk=customer.pk))
    for name, value in fields(text).items():
        setattr(customer, name, value)
    with pytest.raises(ValidationError) as info:
        customer.save() if how == "save" else customer.full_clean()
    assert param in info.value.message_dict, info.value.message_dict
    assert model_to_dict(Customer.objects.get(pk=customer.pk)) == before
    assert not PendingPush.objects.exists()


@pytest.mark.parametrize(("place", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_in_a_webhook_event_a_400_names_the_part(stripe, client, place, text):
    _param, fields, part = PLACES[place]
    customer = mirrored(stripe)
    before = model_to_dict(Customer.objects.get(pk=customer.pk))
    obj = {**stripe.get_customer(customer.stripe_id), **fields(text)}
    body = json.dumps(event(obj)).encode()  # json escapes a lone surrogate as \ud800, as a sender could
    response = deliver(client, body, signed(body))
    assert response.status_code == 400, response.content
    assert f"text in {part} " in response.content.decode(errors="replace")
    assert model_to_dict(Customer.objects.get(pk=customer.pk)) == before
    assert not WebhookEvent.objects.filter(outcome="applied").exists()


@pytest.mark.parametrize(("place", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_on_a_pull_page_the_customer_is_skipped_and_the_rest_stored(stripe, place, text):
    param, fields, _part = PLACES[place]
    bad = stripe.add_customer(email="bad@example.com", **fields(text))
    fine = [stripe.add_customer(name=f"Fine {i}") for i in range(2)]
    stats = sync.pull(page_size=10)
    assert (stats.pages, stats.created, stats.skipped) == (1, 2, 1)
    assert param in stats.unstorable[bad["id"]], stats.unstorable
    assert not Customer.objects.filter(stripe_id=bad["id"]).exists()
    assert set(Customer.objects.values_list("stripe_id", flat=True)) == {c["id"] for c in fine}


@pytest.mark.parametrize("text", ACCEPTED)
def test_accepted_text_goes_through_every_path(stripe, client, text):
    obj = stripe.add_customer(name=text, description=text, metadata={"plan": text})
    assert sync.pull().created == 1
    customer = Customer.objects.get(stripe_id=obj["id"])
    assert (customer.name, customer.description, customer.metadata) == (text, text, {"plan": text})
    body = json.dumps(event({**obj, "name": text + "!"})).encode()
    assert deliver(client, body, signed(body)).status_code == 200
    customer.refresh_from_db()
    customer.description = text + "?"
    customer.full_clean()
    customer.save()
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
