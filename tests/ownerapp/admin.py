"""The site's own admin of its owner model: all a site writes is the mixin in the bases."""

from django.contrib import admin

from customersync.admin.owner import OwnerAdminMixin

from .models import Organization


@admin.register(Organization)
class OrganizationAdmin(OwnerAdminMixin, admin.ModelAdmin):
    list_display = ("name", "billing_email")
    search_fields = ("name", "billing_email")
