"""A site's own owner model, as a site would have it: an organization with billing details."""

from django.db import models

from customersync.owner_model import OwnerMixin


class Organization(OwnerMixin, models.Model):
    name = models.CharField(max_length=200)
    billing_email = models.EmailField(blank=True)
    phone = models.CharField(max_length=40, blank=True)
    street = models.CharField(max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    country = models.CharField(max_length=2, blank=True)
    # What a site that linked customers by hand keeps (customersync_link --field).
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    plan_note = models.CharField(max_length=200, blank=True)  # not mapped

    def __str__(self) -> str:
        return self.name

    def customer_description(self) -> str:
        return f"Organization {self.name}"
