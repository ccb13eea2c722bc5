"""Stripe's answers to a push: whether a 200 is usable as this customer's answer, and the
customer an earlier run created for an owner (found by its metadata before creating another).

A 200 for another customer's id (a hostile or broken server) is never stored: the local
customer would be repointed to that id and overwritten with its data.
"""

from __future__ import annotations

import logging
from typing import Any

from ..models import Customer, PendingPush
from ..owner import mapping as owners
from ..stripe.client import StripeClient

logger = logging.getLogger("customersync")


def problem(record: PendingPush, response: dict[str, Any], stripe_id: str | None, customer: Customer) -> str | None:
    """What makes a 200 unusable as the answer for ``customer`` (as the push read it), or None."""
    answered = response.get("id")
    if (
        not isinstance(answered, str)
        or not answered.startswith("cus_")
        or response.get("object", "customer") != "customer"
    ):
        return f"Stripe's answer is not a customer (id {str(answered)[:80]!r})."
    if record.operation != "create" and answered != stripe_id:
        return f"Stripe answered for another customer ({answered[:80]}) than the one pushed ({stripe_id})."
    if record.operation == "create":
        # The same cus_ id in another account is another customer.
        others = Customer.objects.using(customer._state.db).filter(stripe_id=answered, account_id=customer.account_id)
        if others.exclude(pk=customer.pk).exists():
            return f"Stripe's answer is customer {answered[:80]}, which another customer here already mirrors."
    return None


def owners_customer_in_stripe(customer: Customer, client: StripeClient) -> dict[str, Any] | None:
    """The Stripe customer an earlier run created for this customer's owner (by its metadata), if any."""
    mapping = owners.mapping()
    owner_id = getattr(customer, "owner_id", None)
    if mapping is None or owner_id is None:
        return None
    identity = mapping.identity(owner_id)
    found = client.search_customers(f"metadata['{owners.OWNER_METADATA_KEY}']:'{identity}'").get("data") or []
    if len(found) > 1:
        logger.warning("Stripe holds %s customers for %s; taking the oldest.", len(found), identity)
    return min(found, key=lambda c: (c.get("created") or 0, c.get("id") or "")) if found else None
