"""Signals.

Public, for sites that want to react to sync outcomes:

- ``customer_pushed(sender=Customer, customer_pk, params)``: Stripe confirmed a push;
  ``params`` is what was sent.
- ``push_failed(sender=Customer, customer_pk, error)``: a push failed for good;
  ``error`` is a dict with Stripe's message, type, code, param, HTTP status and
  request id.

The app's own:

- ``customer_changed(sender=Customer, customer)``: a save changed what Stripe
  has; sent inside the save's transaction, after its write. The outbox
  receives it (connected in ``AppConfig.ready()``) to record and publish the
  push, so the model never imports the outbox.
"""

from django.dispatch import Signal

customer_pushed = Signal()
push_failed = Signal()
customer_changed = Signal()
