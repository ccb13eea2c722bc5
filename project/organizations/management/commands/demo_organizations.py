"""``manage.py demo_organizations``: the first sample customers, each owned by an organization.

The demo's fake Stripe server starts afresh on every run with the same sample
customers (their ids are deterministic), so this runs on every start, after
the pull: it links the first ``--count`` customers to an organization made
from the customer's own values (once; a linked organization is kept), then
sends, through the outbox, what each organization holds that Stripe does not
(on a fresh server, ``metadata[org_id]``), as a site that links its existing
customers would.
"""

from django.core.management.base import BaseCommand
from django.db import transaction

from customersync import sync
from customersync.models import Customer, SyncStatus

from ...models import Organization


class Command(BaseCommand):
    help = "Link the first sample customers to organizations (once) and send Stripe what they lack."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=3, help="how many customers to link (default 3)")

    @transaction.atomic
    def handle(self, *, count, **options):
        linked = Customer.objects.filter(owner__isnull=False)
        unlinked = (
            Customer.objects.filter(owner=None, stripe_id__isnull=False)
            .exclude(sync_status=SyncStatus.DELETED)
            .order_by("created", "pk")
        )
        new = 0
        for customer in unlinked[: max(count - linked.count(), 0)]:
            address = customer.address or {}
            customer.owner = Organization.objects.create(
                name=customer.name or customer.stripe_id,
                billing_email=customer.email,
                phone=customer.phone,
                street=address.get("line1") or "",
                city=address.get("city") or "",
                postal_code=address.get("postal_code") or "",
                country=address.get("country") or "",
            )
            customer.save()  # the link alone: nothing to send
            new += 1
        # Forget which values were applied, so each organization's values are
        # compared with the customer's as Stripe has them now.
        linked.update(owner_values={})
        result = sync.sync_from_owners(Organization.objects.filter(customersync_customers__isnull=False))
        self.stdout.write(
            f"Organizations: {linked.count()} linked to sample customers ({new} new), "
            f"{result.updated} with values to send to Stripe."
        )
        for pk, errors in result.errors.items():
            self.stderr.write(f"Organization {pk}: {errors}")
