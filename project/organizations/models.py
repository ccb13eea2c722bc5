"""The demo site's organizations: each one is billed as one Stripe customer.

``CUSTOMERSYNC["OWNER_FIELDS"]`` in ``project/settings.py`` says which of these
fields give which customer parameter; a save sends only what changed.
"""

from django.db import models

from customersync.owner_model import OwnerMixin


class Organization(OwnerMixin, models.Model):
    name = models.CharField(max_length=200)
    billing_email = models.EmailField(blank=True)
    phone = models.CharField(max_length=40, blank=True)
    street = models.CharField(max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="Two-letter ISO code, e.g. FR.")

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name
