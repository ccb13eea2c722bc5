"""A site whose owner keeps its billing details on related models, as real sites do.

A ``Team`` owns the customer. Its billing email lives on a one-to-one
``TeamProfile`` (``"email": "profile.billing_email"``, entered by the reverse
side), its phone on the ``Contact`` a foreign key names
(``"phone": "billing_contact.phone"``), its name comes from a method,
``metadata[plan]`` from a property and its address from four columns, both
ways. ``Member`` rows hang off the team by a foreign key: a path through them
has no one value (a system check refuses it).
"""

from django.db import models

from customersync.owner_model import OwnerMixin


class Office(models.Model):
    region = models.CharField(max_length=40, blank=True)


class Contact(models.Model):
    phone = models.CharField(max_length=40, blank=True)
    office = models.ForeignKey(Office, null=True, blank=True, on_delete=models.SET_NULL)


class Team(OwnerMixin, models.Model):
    name = models.CharField(max_length=200)
    street = models.CharField(max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    country = models.CharField(max_length=2, blank=True)
    plan = models.CharField(max_length=20, default="free")
    seats = models.PositiveIntegerField(default=1)  # not mapped
    billing_contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL)

    def __str__(self) -> str:
        return self.name

    def customer_name(self) -> str:
        return f"Team {self.name}"

    @property
    def plan_label(self) -> str:
        return self.plan.title()


class TeamProfile(models.Model):
    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="profile")
    billing_email = models.EmailField(blank=True)
    vat_number = models.CharField(max_length=30, blank=True)  # not mapped


class Member(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="members")
    email = models.EmailField()
