from django.apps import AppConfig


class OrganizationsConfig(AppConfig):
    """The demo site's own model that owns Stripe customers (CUSTOMERSYNC["OWNER_MODEL"])."""

    name = "project.organizations"
    label = "organizations"
    default_auto_field = "django.db.models.BigAutoField"
