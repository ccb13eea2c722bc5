"""The site's custom user in Django's UserAdmin, with its declared fieldsets, plus the owner mixin."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from customersync.admin.owner import OwnerAdminMixin

from .models import User


@admin.register(User)
class CustomUserAdmin(OwnerAdminMixin, UserAdmin):
    fieldsets = (
        *(UserAdmin.fieldsets or ()),
        ("Billing", {"fields": ("billing_email", "phone", "street", "city", "postal_code", "country", "plan_note")}),
    )
