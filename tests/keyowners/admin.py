"""The site's admin of its owner models: the mixin in the bases."""

from django.contrib import admin

from customersync.admin.owner import OwnerAdminMixin

from .models import CodeOrganization, UuidOrganization


@admin.register(UuidOrganization, CodeOrganization)
class OrganizationAdmin(OwnerAdminMixin, admin.ModelAdmin):
    list_display = ("name", "billing_email")
    search_fields = ("name", "billing_email")
