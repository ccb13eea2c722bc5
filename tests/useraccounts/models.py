"""A site's custom user model, owning customers directly."""

from django.contrib.auth.models import AbstractUser
from django.db import models

from customersync.owner_model import OwnerMixin


class User(OwnerMixin, AbstractUser):
    billing_email = models.EmailField(blank=True)
    phone = models.CharField(max_length=40, blank=True)
    street = models.CharField(max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    country = models.CharField(max_length=2, blank=True)
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    plan_note = models.CharField(max_length=200, blank=True)  # not mapped

    def customer_description(self) -> str:
        return f"User {self.username}"
