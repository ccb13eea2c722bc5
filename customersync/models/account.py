"""An account customers live in: a platform's own Stripe account, or one of its connected accounts.

Accounts are data; their keys are settings. ``platform`` names an entry of
``CUSTOMERSYNC["PLATFORMS"]`` (or ``"default"``: the top-level ``API_KEY``),
whose secret key every request uses; ``stripe_account`` is a connected
account's ``acct_...`` id, sent as ``Stripe-Context`` (``Stripe-Account`` for
API versions before it), or empty for the platform's own account. A customer
with no account belongs to the default platform's own account, so a site with
one Stripe account never sees this model.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from ..conf import app_settings
from ..stripe.client import ACCOUNT_ID

DEFAULT_PLATFORM = "default"
PLATFORM_NAME = r"[a-z0-9][a-z0-9_-]{0,63}"
CONNECTED_ID = ACCOUNT_ID.pattern
# Anchored with \A and \Z: "$" also matches before a trailing newline ("acct_12\n" would pass).


class Account(models.Model):
    platform = models.CharField(
        _("platform"),
        max_length=64,
        default=DEFAULT_PLATFORM,
        validators=[RegexValidator(rf"\A{PLATFORM_NAME}\Z", _("Lowercase letters, digits, _ and -."))],
        help_text=_("A name from CUSTOMERSYNC['PLATFORMS'], or 'default' for the top-level API_KEY."),
    )
    stripe_account = models.CharField(
        _("connected account"),
        max_length=255,
        blank=True,
        validators=[RegexValidator(rf"\A{CONNECTED_ID}\Z", _("A Stripe account id: acct_ and letters or digits."))],
        help_text=_("The connected account's acct_... id; empty for the platform's own account."),
    )
    name = models.CharField(_("name"), max_length=100, blank=True)

    class Meta:
        verbose_name = _("Stripe account")
        verbose_name_plural = _("Stripe accounts")
        ordering = ("platform", "stripe_account")
        constraints = [
            models.UniqueConstraint(fields=["platform", "stripe_account"], name="customersync_one_account_per_id"),
            # The default platform's own account is "no account" on a customer.
            models.CheckConstraint(
                condition=~models.Q(platform=DEFAULT_PLATFORM, stripe_account=""),
                name="customersync_default_account_is_null",
            ),
        ]

    def __str__(self) -> str:
        where = self.stripe_account or _("own account")
        label = f"{self.platform} / {where}"
        return f"{self.name} ({label})" if self.name else label

    def clean(self) -> None:
        super().clean()
        if self.platform == DEFAULT_PLATFORM and not self.stripe_account:
            raise ValidationError(
                {
                    "stripe_account": _(
                        "The default platform's own account needs no row: customers without an account "
                        "belong to it. Give a connected account's id, or another platform."
                    )
                }
            )
        names = [DEFAULT_PLATFORM, *(app_settings.get("PLATFORMS") or {})]
        if self.platform not in names:
            known = ", ".join(names)
            raise ValidationError(
                {
                    "platform": _("No platform %(name)s in CUSTOMERSYNC['PLATFORMS'] (known: %(known)s).")
                    % {"name": self.platform, "known": known}
                }
            )
