"""The parameter table is the only list: a row added to it reaches the form, the admin, the diff and redaction."""

import pytest

from customersync import sync
from customersync.admin.forms import CustomerForm
from customersync.core.encoding import encode
from customersync.core.params import TABLE, Param, Role
from tests.admin_forms import change_url, edit

pytestmark = pytest.mark.django_db

# A sub-parameter of a JSON field, and a secret write-once value: neither needs a model change.
MEMO = Param(("invoice_settings", "memo"), section="billing", label="Invoice memo")
GIFT = Param(("gift_token",), role=Role.WRITE_ONCE, clearable=False, secret=True, section="payment", label="Gift")


def test_a_new_row_gets_a_field_in_its_section_a_diff_an_encoding_and_redaction(stripe, admin_client):
    customer = sync.pull_one(stripe.add_customer(email="a@example.com")["id"])
    with TABLE.extended(MEMO, GIFT):
        adminform = admin_client.get(change_url(customer)).context["adminform"]
        sections = {str(name): options["fields"] for name, options in adminform.fieldsets}
        assert "invoice_settings_memo" in sections["Billing and invoices"]
        assert "gift_token" in sections["Payment source"]
        assert adminform.form.fields["invoice_settings_memo"].label == "Invoice memo"

        response = edit(admin_client, customer, invoice_settings_memo="Net 30", gift_token="tok_gift")
        assert response.status_code == 302, response.content.decode()[:2000]
        customer.refresh_from_db()
        params = customer.pending_params()
        assert params == {"invoice_settings": {"memo": "Net 30"}, "gift_token": "tok_gift"}
        assert encode(params) == "invoice_settings[memo]=Net+30&gift_token=tok_gift"
        assert sync.loggable(params) == "invoice_settings[memo]=Net+30&gift_token=[redacted]"
        assert sync.redact(params)["gift_token"] == "[redacted]"
    # Outside the with, the table is as shipped again.
    assert "invoice_settings_memo" not in CustomerForm(instance=customer).fields
    assert "gift_token" not in CustomerForm(instance=customer).fields
