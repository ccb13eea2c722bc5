from django.contrib import admin

from .models import Organization


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):  # TODO owner_admin
    list_display = ("name", "billing_email", "city", "country")
    search_fields = ("name", "billing_email")
    fieldsets = [
        (None, {"fields": ("name", "billing_email", "phone")}),
        ("Address", {"fields": ("street", "city", "postal_code", "country")}),
    ]
