"""``OwnerMixin``, for the site's owner model (``CUSTOMERSYNC["OWNER_MODEL"]``)::

    from customersync.owner_model import OwnerMixin

    class Organization(OwnerMixin, models.Model):
        ...

It adds no field (no migration). With it, on PostgreSQL, an owner save that changes mapped
values is one statement: the owner's own ``UPDATE``, its customers' changed values and their
outbox records (``owner_save``, ``ownersql``), instead of a read of the customers before the
owner's update and a write of each customer after it. What changed is decided against the owner's
mapped values as it was loaded. Without it, or on other databases, saves take the signal path
(``owner_sync``), as before.

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
    """Remembers the mapped values as loaded, and folds the customers' write into the owner's ``UPDATE``."""

    # False: saves take the signal path, as without the mixin.
    customersync_one_statement = True

    @classmethod
    def from_db(cls, db: Any, field_names: Any, values: Any, **kwargs: Any) -> Any:
        # **kwargs: Django 6.1 passes fetch_mode to a from_db that accepts it (and warns otherwise).
        instance = super().from_db(db, field_names, values, **kwargs)
        from .owner_save import remember

        remember(instance)
        return instance

    def refresh_from_db(self, using: Any = None, fields: Any = None, from_queryset: Any = None) -> None:
        super().refresh_from_db(using=using, fields=fields, from_queryset=from_queryset)
        from .owner_save import remember

        remember(self, fields)

    def _do_update(self, base_qs: Any, using: Any, pk_val: Any, values: Any, update_fields: Any,
                   forced_update: Any, *rest: Any) -> Any:  # fmt: skip
        from .owner_save import PLAN, write

        plan = self.__dict__.pop(PLAN, None)
        if plan is None:
            return super()._do_update(base_qs, using, pk_val, values, update_fields, forced_update, *rest)
        return write(self, plan, base_qs, using, pk_val, values, update_fields, forced_update, rest,
                     super()._do_update)  # fmt: skip
