"""The customer list's filters by Stripe account and by mode, and the Account admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from ..accounts import DEFAULT, platforms
from ..models import Account

NO_ACCOUNT = "default"


def several_accounts() -> bool:
    """Whether the site has accounts beyond the default one (one query): only then are they shown."""
    return Account.objects.exists()


def account_label(account: Account | None) -> str:
    return str(_("default platform")) if account is None else str(account)


class AccountFilter(admin.SimpleListFilter):
    title = _("Stripe account")
    parameter_name = "account"
    field = "account"  # the path from the listed model to its Account

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        accounts = list(Account.objects.all())
        if not accounts:
            return []  # one account: no filter to show
        return [(NO_ACCOUNT, account_label(None)), *((str(a.pk), str(a)) for a in accounts)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == NO_ACCOUNT:
            return queryset.filter(**{self.field: None})
        if value and value.isdigit():
            return queryset.filter(**{f"{self.field}__pk": int(value)})
        return queryset


class CustomerAccountFilter(AccountFilter):
    """The account filter of a list of records that belong to a customer (the sync log, conflicts)."""

    field = "customer__account"


class ModeFilter(admin.SimpleListFilter):
    """Test or live, as Stripe reported the customer (``livemode``)."""

    title = _("mode")
    parameter_name = "mode"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("test", _("Test mode")), ("live", _("Live mode"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("test", "live"):
            return queryset.filter(livemode=self.value() == "live")
        return queryset


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("__str__", "platform", "stripe_account", "mode", "customer_count")
    list_filter = ("platform",)
    search_fields = ("name", "stripe_account")

    def get_readonly_fields(self, request: HttpRequest, obj: Account | None = None) -> tuple[str, ...]:
        # Its customers' ids belong to the account it names: fixed once it has customers.
        return ("platform", "stripe_account") if obj is not None and obj.customers.exists() else ()

    @admin.display(description=_("mode"))
    def mode(self, obj: Account) -> str:
        found = platforms().get(obj.platform or DEFAULT)
        if found is None:
            return str(_("unknown platform"))
        return {True: str(_("live")), False: str(_("test")), None: "-"}[found.livemode]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(customersync_customers=Count("customers"))

    @admin.display(description=_("customers"), ordering="customersync_customers")
    def customer_count(self, obj: Account) -> int:
        return obj.customersync_customers  # type: ignore[attr-defined]
