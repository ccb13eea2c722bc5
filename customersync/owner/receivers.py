"""What the app does when a customer, or its owner, is saved or deleted, wired in ``AppConfig.ready()``.

The model announces; these receivers act (as django-celery-beat connects its
schedule-change handlers), each connected with an explicit sender.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.signals import setting_changed
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from .. import signals
from ..accounts import stripe_client
from ..conf import app_settings, owner_model_label
from ..exceptions import StripeError
from ..models import Customer
from ..push.outbox import record_change
from . import related
from .customers import owner_post_save, owner_pre_save
from .unlink import owner_pre_delete

logger = logging.getLogger("customersync")


def delete_in_stripe(sender: type, instance: Customer, **kwargs: Any) -> None:
    """post_delete: delete in Stripe too when CUSTOMERSYNC['DELETE_IN_STRIPE'] says so (on commit)."""
    stripe_id = instance.stripe_id
    if not stripe_id or not app_settings.DELETE_IN_STRIPE:
        return
    account = instance.account if instance.account_id is not None else None

    def delete() -> None:
        try:
            stripe_client(account).delete_customer(stripe_id)
            logger.info("Deleted %s in Stripe.", stripe_id)
        except StripeError as err:
            logger.error("Could not delete %s in Stripe: %s", stripe_id, err)

    transaction.on_commit(delete)


def connect() -> None:
    signals.customer_changed.connect(record_change, sender=Customer, dispatch_uid="customersync.record_change")
    post_delete.connect(delete_in_stripe, sender=Customer, dispatch_uid="customersync.delete_in_stripe")
    owner = owner_model_label()
    if owner:
        # The owner's saves keep its customer in step (owner.customers); a lazy
        # "app_label.Model" sender, resolved once the site's app is loaded.
        pre_save.connect(owner_pre_save, sender=owner, dispatch_uid="customersync.owner_pre_save")
        post_save.connect(owner_post_save, sender=owner, dispatch_uid="customersync.owner_post_save")
        # Its deletion unlinks its customers in Stripe too, before Django sets their owner to NULL.
        pre_delete.connect(owner_pre_delete, sender=owner, dispatch_uid="customersync.owner_pre_delete")
        # The models its mapped paths pass through: their saves send what they change.
        related.connect()
        setting_changed.connect(_settings_changed, dispatch_uid="customersync.related.connect")


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "CUSTOMERSYNC":
        related.connect()
