"""Public signals, for sites that want to react to sync outcomes.

- ``customer_pushed(sender=Customer, customer_pk, params)``: Stripe confirmed a push;
  ``params`` is what was sent.
- ``push_failed(sender=Customer, customer_pk, error)``: a push failed for good;
  ``error`` is a dict with Stripe's message, type, code, param, HTTP status and
  request id.
"""

from django.dispatch import Signal

customer_pushed = Signal()
push_failed = Signal()
