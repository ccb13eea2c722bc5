"""Stripe's webhook endpoints, the events they apply to the mirror, and the checks on an event.

``sign`` (from ``signature``) is importable from here: a site's test signs a
hand-made event with it (``customersync.webhooks.sign``).

Modules and their public names:

- ``events``: Stripe's webhook events for customers, applied to the mirror once each.
  Public: ``CUSTOMER_EVENTS``, ``handle_event``.
- ``signature``: Stripe's webhook signature. Public: ``sign``.
- ``validation``: What a webhook event must look like before it touches the mirror.
  Public: ``MAX_DEPTH``, ``CREATED_MAX``, ``EVENT_ID``, ``CUSTOMER_ID``, ``STRIPE_OWNED``, ``parse_payload``,
  ``check_event``.
- ``views``: The Stripe webhook endpoints for customer events.
  Public: ``MAX_HEADER``, ``TIMESTAMP``, ``SIGNATURE``, ``verify``, ``verify_any``, ``webhook``.
"""

from .signature import sign

__all__ = ["sign"]
