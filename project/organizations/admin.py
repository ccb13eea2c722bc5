from django.contrib import admin

from customersync.admin.owner import OwnerAdminMixin

from .models import Organization


@admin.register(Organization)
class OrganizationAdmin(OwnerAdminMixin, admin.ModelAdmin):
    list_display = ("name", "billing_email", "city", "country")
    search_fields = ("name", "billing_email")
    fieldsets = [
        (None, {"fields": ("name", "billing_email", "phone")}),
        ("Address", {"fields": ("street", "city", "postal_code", "country")}),
    ]
