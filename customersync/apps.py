from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CustomerSyncConfig(AppConfig):
    name = "customersync"
    verbose_name = _("Stripe customer sync")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .checks import accounts, configuration  # noqa: F401  (registers the system checks)
        from .owner.receivers import connect

        connect()
