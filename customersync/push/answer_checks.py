"""Stripe's answers to a push: whether a 200 is usable as this customer's answer, and the
customer an earlier run created for an owner (found by its metadata before creating another).

A customer the owner search answers is adopted only if its ``metadata[customersync_owner]``
is the owner's identity exactly: whatever the search matched (a hostile owner key, a broken
or hostile server), no other owner's customer is written to.

A 200 for another customer's id (a hostile or broken server) is never stored: the local
customer would be repointed to that id and overwritten with its data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..exceptions import APIError
from ..models import Customer, PendingPush
from ..owner import mapping as owner_mapping
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


@dataclass(frozen=True)
class Search:
    """What the search for an owner's customer found: the one to adopt (None: create), and why
    customers it answered were not adopted ('' when it answered none that was not the owner's)."""

    found: dict[str, Any] | None
    refused: str = ""


def owners_customer_in_stripe(customer: Customer, client: StripeClient) -> Search:
    """The Stripe customer an earlier run created for this customer's owner: found by Stripe's search
    on its ``metadata[customersync_owner]`` (the value quoted, never formatted in), and taken only
    when that metadata is the owner's identity exactly, whatever else the search answered."""
    mapping = owner_mapping.mapping()
    owner_id = getattr(customer, "owner_id", None)
    if mapping is None or owner_id is None:
        return Search(None)
    identity = mapping.identity(owner_id)
    answer = client.search_customers_by_metadata(owner_mapping.OWNER_METADATA_KEY, identity)
    answered = answer.get("data")
    if not isinstance(answered, list):
        raise APIError(
            "Stripe's search answer is not a list of customers.",
            http_status=200,
            request_id=getattr(answer, "request_id", None),
            should_retry=False,  # a malformed 200 is answered the same again
        )
    theirs = [c for c in answered if mapping.names_owner(c, owner_id) and _is_customer_id(c.get("id"))]
    others = [c for c in answered if not any(c is t for t in theirs)]
    refused = ""
    if others:
        ids = ", ".join(_shown_id(c) for c in others[:5]) + (", ..." if len(others) > 5 else "")
        key = owner_mapping.OWNER_METADATA_KEY
        refused = (
            f"Not adopted: Stripe's search for metadata[{key}] {identity[:200]!r} answered "
            f"{len(others)} customer(s) whose metadata[{key}] is not that ({ids})."
        )
        logger.warning("%s", refused)
    if len(theirs) > 1:
        logger.warning("Stripe holds %s customers for %s; taking the oldest.", len(theirs), identity)
    return Search(min(theirs, key=_age) if theirs else None, refused)


def _is_customer_id(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("cus_")


def _shown_id(obj: Any) -> str:
    value = obj.get("id") if isinstance(obj, dict) else None
    return repr(value[:80]) if isinstance(value, str) else "no id"


def _age(obj: dict[str, Any]) -> tuple[int, int, str]:
    """The oldest first, by ``created`` when it is a whole number (else after those), then by id."""
    created = obj.get("created")
    if isinstance(created, int) and not isinstance(created, bool):
        return (0, created, obj["id"])
    return (1, 0, obj["id"])
