from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class CustomerSyncConfig(AppConfig):
    name = "customersync"
    verbose_name = _("Stripe customer sync")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import account_checks, checks  # noqa: F401  (registers the system checks)
        from .receivers import connect

        connect()
        post_migrate.connect(_install_owner_function, sender=self, dispatch_uid="customersync.owner_function")


def _install_owner_function(sender: AppConfig, using: str, **kwargs: object) -> None:
    """After ``migrate`` (and ``flush``): the owner function of the mapping, where the app's tables
    are, on PostgreSQL (``ownersql``)."""
    from django.db import connections, router

    from .exceptions import ConfigurationError
    from .models import Customer
    from .owners import mapping

    connection = connections[using]
    try:
        found = mapping()
    except ConfigurationError:
        return  # the system checks report it
    if found and found.sources and connection.vendor == "postgresql" and router.allow_migrate_model(using, Customer):
        from .ownersql import install

        install(found, connection)
