from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CustomerSyncConfig(AppConfig):
    name = "customersync"
    verbose_name = _("Stripe customer sync")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from . import checks  # noqa: F401  (registers the system checks)
        from .models import Customer
        from .sync import customer_deleted

        post_delete.connect(customer_deleted, sender=Customer, dispatch_uid="customersync.customer_deleted")
