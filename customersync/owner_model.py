"""``OwnerMixin``, for the site's owner model (``CUSTOMERSYNC["OWNER_MODEL"]``)::

    from customersync.owner_model import OwnerMixin

    class Organization(OwnerMixin, models.Model):
        ...

It adds no field (no migration) and overrides Django's documented loading hooks (``from_db``,
``refresh_from_db``): the owner remembers its mapped values as loaded (``owner.save``). Its saves
take the same path as without it (``owner.customers``' receivers); what the mixin adds is knowing,
without a query, which mapped values a save changes: a save changing none costs nothing but the
owner's own ``UPDATE``, and only the changed ones are checked and compared with what its customers
last had applied. It also overrides ``save()``: a save made outside a transaction that changes a
mapped value runs in one, so the owner's row and its customers' commit together, in one commit.

This module imports nothing from the app at import time: a site's models import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.db import models

    _Base = models.Model
else:
    _Base = object


class OwnerMixin(_Base):
    """Remembers the owner's mapped values as loaded from the database."""

    # What ``owner_save`` asks of a model: it does not import this module, which imports nothing of the app's.
    customersync_remembers_loaded = True

    @classmethod
    def from_db(cls, db: Any, field_names: Any, values: Any, **kwargs: Any) -> Any:
        # **kwargs: Django 6.1 passes fetch_mode to a from_db that accepts it (and warns otherwise).
        instance = super().from_db(db, field_names, values, **kwargs)
        from .owner.save import remember

        remember(instance)
        return instance

    def save(self, *args: Any, **kwargs: Any) -> None:
        from .owner.save import one_transaction

        with one_transaction(self, kwargs.get("using"), kwargs.get("update_fields")):
            super().save(*args, **kwargs)

    def refresh_from_db(self, using: Any = None, fields: Any = None, from_queryset: Any = None) -> None:
        super().refresh_from_db(using=using, fields=fields, from_queryset=from_queryset)
        from .owner.save import remember

        remember(self, fields)
