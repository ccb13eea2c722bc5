"""Owner models whose primary key is not a number: a UUID, and a code a site picks (a string).

``CUSTOMERSYNC_TEST_OWNER=uuid`` or ``code`` names one as the site's owner model (the customer's
``owner`` column then has its type); the owner and webhook tests run on it as on the organization.
"""

import uuid

from django.db import models

from customersync.owner_model import OwnerMixin


def new_code() -> str:
    """A site's own code for an organization: letters, digits and a dash."""
    return f"Org-{uuid.uuid4().hex[:12].upper()}"


class _Billing(models.Model):
    name = models.CharField(max_length=200)
    billing_email = models.EmailField(blank=True)
    phone = models.CharField(max_length=40, blank=True)
    street = models.CharField(max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    country = models.CharField(max_length=2, blank=True)
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    plan_note = models.CharField(max_length=200, blank=True)  # not mapped

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.name

    def customer_description(self) -> str:
        return f"Organization {self.name}"


class UuidOrganization(OwnerMixin, _Billing):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)


class CodeOrganization(OwnerMixin, _Billing):
    code = models.CharField(primary_key=True, max_length=40, default=new_code)
