"""The admin: edit customers; saving queues a push of exactly what changed."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import AdminTextareaWidget
from django.core.exceptions import PermissionDenied
from django.db import models, router, transaction
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from .. import sync
from ..core.params import SECTIONS, TABLE
from ..exceptions import ConfigurationError, StripeError, Unstorable
from ..models import Customer, SyncStatus
from . import display, filters, records
from .display import truncated, when
from .forms import CustomerForm, form_fields, model_params
from .overview import overview_view

logger = logging.getLogger("customersync")

# The customer's owner, read-only, first on the page (with CUSTOMERSYNC["OWNER_MODEL"]).
_OWNER_ROW = ("owner_link", "owner_unsent") if any(f.name == "owner" for f in Customer._meta.get_fields()) else ()

SECTION_TITLES = {
    "contact": _("Contact"),
    "billing": _("Billing and invoices"),
    "tax": _("Tax"),
    "address": _("Address"),
    "shipping": _("Shipping"),
    "payment": _("Payment source"),
    "advanced": _("Advanced"),
}
SECTION_OPTIONS = {"advanced": {"classes": ("collapse",)}}
# Legacy ways to attach a payment source: in a group of their own, collapsed
# (it opens by itself when one of them has an error).
LEGACY_PAYMENT = frozenset({"card", "bank_account", "default_card", "default_bank_account", "default_alipay_account"})

# What each action and button does: the tooltip of its option and button, and the list's help line.
ACTION_HELP = {
    "push_now": _(
        "Send the pending changes to Stripe now. Saving already queues a push: use this when one seems stuck "
        "or the changes were made from code. Customers with nothing to send are skipped."
    ),
    "retry_failed": _(
        "For customers whose last push failed: send their pending changes again, once the cause shown as the "
        "last error is fixed. Others are skipped."
    ),
    "refresh_from_stripe": _(
        "Reload from Stripe. Edits not yet pushed are kept, and a conflict is recorded when Stripe changed "
        "the same field."
    ),
}


def _description(action: Any) -> str:
    """An action's description: an attribute from Django 6.1 (which warns at indexing), the third
    item of a tuple before."""
    return action.description if hasattr(action, "description") else action[2]


class _TitledSelect(forms.Select):
    """The action menu: each option says what its action does on hover."""

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        if value in ACTION_HELP:
            option["attrs"]["title"] = str(ACTION_HELP[value])
        return option


class CustomerActionForm(helpers.ActionForm):
    action = forms.ChoiceField(label=_("Action:"), widget=_TitledSelect)


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    form = CustomerForm
    action_form = CustomerActionForm

    class Media:
        css = {"all": ("customersync/admin.css",)}

    # A description of three lines, not ten: the page stays short.
    formfield_overrides = {models.TextField: {"widget": AdminTextareaWidget(attrs={"rows": 3})}}
    change_form_template = "admin/customersync/customer/change_form.html"
    change_list_template = "admin/customersync/customer/change_list.html"
    actions = ("push_now", "retry_failed", "refresh_from_stripe")
    list_display = ("customer", "stripe_id_link", "status", "last_pushed")
    list_filter = ("sync_status", filters.AccountFilter, filters.ModeFilter)
    list_select_related = ("account",)
    search_fields = ("email", "name", "stripe_id")
    readonly_fields = (
        "stripe_link",
        "created_in_stripe",
        "currency",
        "delinquent",
        "sync_badge",
        "pending_changes",
        "sync_error_details",
        "last_pushed",
        "last_pulled",
        "sync_history",
        "conflicts_list",
        "owner_link",
        "owner_unsent",
    )

    def get_form(self, request: HttpRequest, obj: Customer | None = None, change: bool = False, **kwargs):
        # Only the model's fields go to the form factory; the form makes the rest from the table.
        kwargs["fields"] = [p.name for p in model_params()] + list(self._account_row(obj))
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Customer | None = None) -> list:
        """Top-down: the status, what the next push sends, what happened, then the editable groups."""
        sections = []
        for section in SECTIONS:
            params = [p for p in TABLE.params if p.section == section]
            collapsed = {"classes": ("collapse",)}
            for title, chosen, options in (
                (SECTION_TITLES[section], [p for p in params if p.name not in LEGACY_PAYMENT], {}),
                (_("Legacy payment sources"), [p for p in params if p.name in LEGACY_PAYMENT], collapsed),
            ):
                if section == "shipping" and not (obj and obj.shipping):
                    options = collapsed  # most customers have none: opened to add one
                if fields := [name for p in chosen for name in form_fields(p)]:
                    sections.append((title, {"fields": fields, **options, **SECTION_OPTIONS.get(section, {})}))
        return [
            (
                _("Status"),
                {
                    "fields": (
                        *_OWNER_ROW,
                        "sync_badge",
                        "stripe_link",
                        *self._account_row(obj),
                        ("last_pushed", "last_pulled"),
                    )
                },
            ),
            (_("What the next push sends"), {"fields": ("pending_changes",)}),
            (_("What happened"), {"fields": ("sync_error_details", "sync_history", "conflicts_list")}),
            *sections,
            (_("Stripe's own fields"), {"fields": ("created_in_stripe", "currency", "delinquent")}),
        ]

    def _account_row(self, obj: Customer | None) -> tuple[str, ...]:
        """The account field where there are several accounts: editable until the customer exists in Stripe."""
        return ("account",) if filters.several_accounts() else ()

    def get_readonly_fields(self, request: HttpRequest, obj: Customer | None = None):
        fields = tuple(super().get_readonly_fields(request, obj))
        # Its account is where the customer lives in Stripe: moving it would point its id at another customer.
        return (*fields, "account") if obj is not None and obj.stripe_id else fields

    def get_list_display(self, request: HttpRequest):
        shown = tuple(super().get_list_display(request))
        return (*shown[:2], "account_column", *shown[2:]) if filters.several_accounts() else shown

    @admin.display(description=_("account"), ordering="account")
    def account_column(self, obj: Customer) -> str:
        return filters.account_label(obj.account if obj.account_id is not None else None)

    # -- permissions, actions and buttons -----------------------------------

    def has_push_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("customersync.push_customer")

    def has_pull_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("customersync.pull_customer")

    @admin.action(description=_("Push now"), permissions=["push"])
    def push_now(self, request: HttpRequest, queryset) -> None:
        # Through the outbox and the drain, at the rate budget: a selection of
        # 100,000 customers does not put 100,000 messages on the broker at once.
        count = sync.mark_for_push(queryset)
        self.message_user(
            request,
            ngettext(
                "Queued a push of %(count)d customer with changes to send.",
                "Queued pushes of %(count)d customers with changes to send.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )

    @admin.action(description=_("Retry failed pushes"), permissions=["push"])
    def retry_failed(self, request: HttpRequest, queryset) -> None:
        count = sum(1 for customer in queryset.filter(sync_status=SyncStatus.FAILED) if sync.request_push(customer))
        self.message_user(
            request,
            ngettext(
                "Queued a retry of %(count)d failed customer.", "Queued retries of %(count)d failed customers.", count
            )
            % {"count": count},
            messages.SUCCESS if count else messages.WARNING,
        )

    @admin.action(description=_("Refresh from Stripe"), permissions=["pull"])
    def refresh_from_stripe(self, request: HttpRequest, queryset) -> None:
        done, failed = 0, []
        for customer in queryset.exclude(stripe_id=None).select_related("account"):
            try:
                # A savepoint each: whatever one refresh raises, the others and the page go on.
                with transaction.atomic(using=router.db_for_write(Customer)):
                    sync.pull_one(customer.stripe_id, account=customer.account)
                done += 1
            except (StripeError, Unstorable) as err:
                failed.append(f"{customer.stripe_id}: {err.message}")
            except ConfigurationError as err:  # its account's platform has no key, or left the settings
                failed.append(f"{customer.stripe_id}: {err}")
            except Exception as err:  # anything else is said too, never a 500 (its text stays in the log)
                logger.exception("Refresh of %s from Stripe failed", customer.stripe_id)
                failed.append(f"{customer.stripe_id}: the refresh failed ({type(err).__name__}); see the log.")
        self.message_user(
            request,
            ngettext("Refreshed %(count)d customer from Stripe.", "Refreshed %(count)d customers from Stripe.", done)
            % {"count": done},
            messages.SUCCESS,
        )
        for line in failed:
            self.message_user(request, line, messages.ERROR)

    def get_urls(self):
        buttons = [
            ("push", self.push_now, "push"),
            ("retry", self.retry_failed, "push"),
            ("refresh", self.refresh_from_stripe, "pull"),
        ]
        overview = path(
            "overview/",
            self.admin_site.admin_view(partial(overview_view, self)),
            name=f"{self.opts.app_label}_overview",
        )
        return [
            overview,
            *(
                path(
                    f"<path:object_id>/{name}/",
                    self.admin_site.admin_view(self._button(action, permission)),
                    name=f"{self.opts.app_label}_{self.opts.model_name}_{name}",
                )
                for name, action, permission in buttons
            ),
            *super().get_urls(),
        ]

    def _button(self, action, permission: str):
        """A change-page button: the same action, on one customer, POST only, permission checked."""

        @require_POST
        def view(request: HttpRequest, object_id: str):
            if not getattr(self, f"has_{permission}_permission")(request):
                raise PermissionDenied
            # The admin's own lookup: a pk that is not a number, or no customer, is a 404 (not a 500).
            customer = self.get_object(request, unquote(object_id))
            if customer is None:
                raise Http404(_("No customer with this id."))
            action(request, Customer.objects.filter(pk=customer.pk))
            return HttpResponseRedirect(reverse("admin:customersync_customer_change", args=[customer.pk]))

        return view

    def get_actions(self, request: HttpRequest, action_location: Any = None):
        # Django 6.1 says where the actions are shown (and warns at an override without the parameter).
        where = {} if action_location is None else {"action_location": action_location}
        actions = super().get_actions(request, **where)
        if "retry_failed" in actions and not Customer.objects.filter(sync_status=SyncStatus.FAILED).exists():
            del actions["retry_failed"]  # offered only when something failed
        return actions

    def changelist_view(self, request: HttpRequest, extra_context=None):
        actions = self.get_actions(request)
        extra_context = {
            **(extra_context or {}),
            "customersync_actions": [
                (_description(actions[name]), ACTION_HELP[name]) for name in ACTION_HELP if name in actions
            ],
        }
        return super().changelist_view(request, extra_context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_push": self.has_push_permission(request),
            "can_pull": self.has_pull_permission(request),
            "customersync_help": ACTION_HELP,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description=_("owner"))
    def owner_link(self, obj: Customer) -> str:
        """The site's object the customer belongs to, linked to its page when this admin site registers it."""
        return display.admin_link(getattr(obj, "owner", None), self.admin_site)

    @admin.display(description=_("owner's values not sent"))
    def owner_unsent(self, obj: Customer) -> str:
        """The owner's mapped values Stripe would refuse, which no save sends until they are fixed."""
        owner = getattr(obj, "owner", None)
        return (display.unsent(sync.unsent(owner)) or "-") if owner is not None else "-"

    @admin.display(description=_("sync status"), ordering="sync_status")
    def sync_badge(self, obj: Customer) -> str:
        return display.badge(obj)

    @admin.display(description=_("last sync error"))
    def sync_error_details(self, obj: Customer) -> str:
        return display.error_details(obj.sync_error)

    @admin.display(description=_("pending changes"))
    def pending_changes(self, obj: Customer) -> str:
        """What the next push will send, computed by the function the worker uses."""
        return display.pending_changes(obj)

    @admin.display(description=_("Sync history"))
    def sync_history(self, obj: Customer) -> str:
        return records.history_table(obj, self.admin_site)

    @admin.display(description=_("Conflicts"))
    def conflicts_list(self, obj: Customer) -> str:
        return records.conflicts_table(obj)

    @admin.display(description=_("customer"), ordering="name")
    def customer(self, obj: Customer) -> str:
        """The name and, under it, the email: each cut to the column."""
        name = str(obj)
        if not obj.email or obj.email == name:
            return truncated(name)
        return format_html(
            '{}<span class="customersync-quiet customersync-sub">{}</span>', truncated(name), truncated(obj.email)
        )

    @admin.display(description=_("Stripe id"), ordering="stripe_id")
    def stripe_id_link(self, obj: Customer) -> str:
        return display.stripe_link(obj, mode=False)

    @admin.display(description=_("Stripe id"))
    def stripe_link(self, obj: Customer) -> str:
        return display.stripe_link(obj)

    @admin.display(description=_("sync status"), ordering="sync_status")
    def status(self, obj: Customer) -> str:
        """The badge and, under it, the last error cut to one line (the whole text on hover and on the page)."""
        if not obj.sync_error:
            return display.badge(obj)
        return format_html(
            '{}<span class="customersync-error-line">{}</span>',
            display.badge(obj),
            display.error_summary(obj.sync_error),
        )

    @admin.display(description=_("last pushed"), ordering="last_pushed_at")
    def last_pushed(self, obj: Customer) -> str:
        return when(obj.last_pushed_at, _("never"))

    @admin.display(description=_("last pulled"), ordering="last_pulled_at")
    def last_pulled(self, obj: Customer) -> str:
        return when(obj.last_pulled_at, _("never"))

    @admin.display(description=_("created in Stripe"))
    def created_in_stripe(self, obj: Customer) -> str:
        return when(obj.created)
