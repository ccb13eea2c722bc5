"""Stripe's webhook signature: what a site's test signs a hand-made event with.

Django-free apart from ``sensitive_variables``, so ``customersync.webhooks.sign``
imports without loading the models or the view.

Public names: ``sign``.
"""

from __future__ import annotations

import hashlib
import hmac

from django.views.decorators.debug import sensitive_variables


@sensitive_variables()
def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The ``v1`` signature Stripe computes: HMAC-SHA256 of ``"{t}.{payload}"`` with the secret.

    A ``Stripe-Signature`` header is ``f"t={timestamp},v1={sign(payload, secret, timestamp)}"``.
    """
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
