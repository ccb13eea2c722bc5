"""Signals.

Public, for sites that want to react to sync outcomes (all sent with
``sender=Customer``; connect with ``@receiver(signal, sender=Customer)``):

- ``customer_created(customer_pk, stripe_id, owner, found)``: Stripe
  confirmed a customer's creation (after the transaction storing its id
  committed). ``owner`` is the site's owner object, or None (no owner model,
  or an unlinked customer); ``found`` is True when the customer was not
  created but found in Stripe, made by an earlier run for the same owner.
- ``customer_pushed(customer_pk, params)``: Stripe confirmed a push (a
  create or an update); ``params`` is what was sent, tokens included: never
  log it as it is (``sync.redact(params)`` hides them).
- ``push_failed(customer_pk, error)``: a push failed for good (Stripe refused
  it, or retries ran out); ``error`` is a dict with Stripe's ``message``,
  ``type``, ``code``, ``param``, ``http_status`` and ``request_id``. The same
  dict is kept on the customer (``sync_error``) and shown in the admin.
- ``conflict_recorded(conflicts)``: a pull or webhook brought a change to a
  parameter also edited here and not yet pushed; ``conflicts`` is a list of
  saved ``Conflict`` rows (``customer``, ``param``, ``local_value``,
  ``remote_value``, ``resolution`` under ``CONFLICT_POLICY``). Sent inside
  the sync's transaction: use ``transaction.on_commit`` for side effects.

The app's own:

- ``customer_changed(sender=Customer, customer, queued)``: a save changed what
  Stripe has; sent inside the save's transaction, after its write. ``queued``:
  whether a push is likely queued already (the copy saved was pending). The outbox
  receives it (connected in ``AppConfig.ready()``) to record and publish the
  push, so the model never imports the outbox.
"""

from django.dispatch import Signal

customer_created = Signal()
customer_pushed = Signal()
push_failed = Signal()
conflict_recorded = Signal()
customer_changed = Signal()
