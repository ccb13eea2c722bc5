"""The sync's records in the admin, read-only: the sync log (push attempts), conflicts, webhook events.

Also how a customer's page shows its latest attempts and conflicts. Every
moment reads the same way (``admin.display.when``); what a push sent reads as
the pending-changes panel names it, never as a form body or JSON; long texts
are cut to their column with the whole text on hover and on the record's page.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from ..models import Conflict, Customer, Drift, EventCursor, PushAttempt, WebhookEvent
from . import display
from .display import shown, truncated, when
from .filters import CustomerAccountFilter
from .params import sent_lines

# Rows of the customer page's history; the rest are a link away, in the sync log.
HISTORY_ROWS = 10
RECORD_FORM = "admin/customersync/record_change_form.html"


class ReadOnlyMixin:
    """The sync log is written by the sync only."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def customer_title(customer: Customer) -> str:
    """``Ann (cus_123)``: the name an operator knows, and the id Stripe knows."""
    name = customer.name or customer.email
    if name and customer.stripe_id:
        return f"{name} ({customer.stripe_id})"
    return str(customer)


def attempt_number(attempt: PushAttempt) -> int:
    """1 for the customer's first push attempt, 2 for the next..."""
    return PushAttempt.objects.filter(customer_id=attempt.customer_id, id__lte=attempt.id).count()


def attempt_error(attempt: PushAttempt) -> str:
    if attempt.error_param:
        return f"{attempt.error_message} ({attempt.error_param})"
    return attempt.error_message


def sent_names(params: dict[str, Any]) -> str:
    """The parameters a push sent, by name: ``email, address``."""
    return ", ".join(name for name, _value, _whole in sent_lines(params))


@admin.register(PushAttempt)
class PushAttemptAdmin(ReadOnlyMixin, admin.ModelAdmin):
    change_form_template = RECORD_FORM
    list_display = ("started", "customer_link", "result", "sent_summary", "error_summary")
    list_filter = ("outcome", "http_status", CustomerAccountFilter)
    search_fields = ("customer__stripe_id", "customer__email", "request_id", "idempotency_key")
    list_select_related = ("customer",)
    date_hierarchy = "started_at"
    fields = (
        "customer_page",
        "outcome",
        "started",
        "finished",
        "sent_params",
        "http_status",
        "request_id",
        "error_details",
        "idempotency_key",
    )
    readonly_fields = fields

    class Media:
        css = {"all": ("customersync/admin.css",)}

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("customersync.view_customer") or super().has_view_permission(request, obj)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        attempt = self.get_object(request, object_id)
        if attempt is not None:
            title = _("Push attempt %(number)d for %(customer)s") % {
                "number": attempt_number(attempt),
                "customer": customer_title(attempt.customer),
            }
            extra_context = {**(extra_context or {}), "subtitle": title}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, obj: PushAttempt) -> str:
        return when(obj.started_at)

    @admin.display(description=_("finished"), ordering="finished_at")
    def finished(self, obj: PushAttempt) -> str:
        return when(obj.finished_at)

    @admin.display(description=_("customer"), ordering="customer")
    def customer_link(self, obj: PushAttempt) -> str:
        text = truncated(str(obj.customer), title=customer_title(obj.customer))
        return display.admin_link(obj.customer, self.admin_site, text)

    @admin.display(description=_("outcome"), ordering="outcome")
    def result(self, obj: PushAttempt) -> str:
        """The outcome and Stripe's HTTP status: ``Failed (HTTP 400)``."""
        if obj.http_status:
            return format_html(
                '<span class="customersync-nowrap">{} <span class="customersync-quiet">HTTP {}</span></span>',
                obj.get_outcome_display(),
                obj.http_status,
            )
        return obj.get_outcome_display()

    @admin.display(description=_("customer"))
    def customer_page(self, obj: PushAttempt) -> str:
        return display.admin_link(obj.customer, self.admin_site, customer_title(obj.customer))

    @admin.display(description=_("sent"))
    def sent_summary(self, obj: PushAttempt) -> str:
        return truncated(sent_names(obj.params))

    @admin.display(description=_("params sent"))
    def sent_params(self, obj: PushAttempt) -> str:
        return display.sent(obj.params)

    @admin.display(description=_("error"), ordering="error_message")
    def error_summary(self, obj: PushAttempt) -> str:
        return truncated(attempt_error(obj))

    @admin.display(description=_("Stripe's error"))
    def error_details(self, obj: PushAttempt) -> str:
        if not obj.error_message:
            return "-"
        return display.error_details(
            {"message": obj.error_message, "param": obj.error_param, "code": obj.error_code, "type": obj.error_type}
        )


@admin.register(Conflict)
class ConflictAdmin(ReadOnlyMixin, admin.ModelAdmin):
    change_form_template = RECORD_FORM
    list_display = ("detected", "customer_link", "param", "local", "remote", "outcome")  # where seen: a filter
    list_filter = ("resolution", "source", CustomerAccountFilter)
    search_fields = ("customer__stripe_id", "customer__email", "param")
    list_select_related = ("customer",)
    fields = ("customer_page", "detected", "param", "local", "remote", "source", "resolution")
    readonly_fields = fields

    class Media:
        css = {"all": ("customersync/admin.css",)}

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        conflict = self.get_object(request, object_id)
        if conflict is not None:
            title = _("Conflict on %(param)s of %(customer)s") % {
                "param": conflict.param,
                "customer": customer_title(conflict.customer),
            }
            extra_context = {**(extra_context or {}), "subtitle": title}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description=_("detected"), ordering="detected_at")
    def detected(self, obj: Conflict) -> str:
        return when(obj.detected_at)

    @admin.display(description=_("customer"), ordering="customer")
    def customer_link(self, obj: Conflict) -> str:
        text = truncated(str(obj.customer), title=customer_title(obj.customer))
        return display.admin_link(obj.customer, self.admin_site, text)

    @admin.display(description=_("resolution"), ordering="resolution")
    def outcome(self, obj: Conflict) -> str:
        """``Local edit kept``; the rest of the explanation on hover and on the page."""
        full = obj.get_resolution_display()
        return truncated(str(full).split(" (")[0], title=full)

    @admin.display(description=_("customer"))
    def customer_page(self, obj: Conflict) -> str:
        return display.admin_link(obj.customer, self.admin_site, customer_title(obj.customer))

    @admin.display(description=_("local edit"))
    def local(self, obj: Conflict) -> str:
        return truncated(shown(obj.local_value, "-"))

    @admin.display(description=_("value in Stripe"))
    def remote(self, obj: Conflict) -> str:
        return truncated(shown(obj.remote_value, "-"))


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    # Created in Stripe and the detail: on the event's page (the list fits a 1366 px screen).
    list_display = ("received", "type", "event", "account", "stripe_id", "outcome")
    list_filter = ("outcome", "type", "platform")
    search_fields = ("event_id", "stripe_id", "stripe_account")
    fields = (
        "event_id",
        "type",
        "account",
        "stripe_id",
        "created_in_stripe",
        "received",
        "outcome",
        "detail",
        "idempotency_key",
    )
    readonly_fields = fields

    class Media:
        css = {"all": ("customersync/admin.css",)}

    @admin.display(description=_("received"), ordering="received_at")
    def received(self, obj: WebhookEvent) -> str:
        return when(obj.received_at)

    @admin.display(description=_("event id"), ordering="event_id")
    def event(self, obj: WebhookEvent) -> str:
        return truncated(obj.event_id)

    @admin.display(description=_("created in Stripe"), ordering="created")
    def created_in_stripe(self, obj: WebhookEvent) -> str:
        return when(obj.created)

    @admin.display(description=_("account"), ordering="platform")
    def account(self, obj: WebhookEvent) -> str:
        """The platform whose endpoint took it, and the connected account it belongs to, if any."""
        return f"{obj.platform} / {obj.stripe_account}" if obj.stripe_account else obj.platform


def history_table(customer: Customer, admin_site: admin.AdminSite) -> str:
    """The customer's latest push attempts, newest first: when, outcome, what was sent, Stripe's answer."""
    if customer.pk is None:
        return "-"
    attempts = list(PushAttempt.objects.filter(customer=customer).order_by("-started_at", "-id")[: HISTORY_ROWS + 1])
    if not attempts:
        return str(_("No push yet."))
    labels = (_("started"), _("outcome"), _("sent"), _("HTTP status"), _("Stripe request id"), _("error"))
    header = format_html_join("", "<th>{}</th>", ((label,) for label in labels))
    rows = format_html_join(
        "",
        '<tr><td data-label="{}">{}</td><td data-label="{}">{}</td><td data-label="{}">{}</td>'
        '<td data-label="{}">{}</td><td data-label="{}">{}</td><td data-label="{}">{}</td></tr>',
        (
            (
                labels[0],
                display.admin_link(attempt, admin_site, when(attempt.started_at)),
                labels[1],
                attempt.get_outcome_display(),
                labels[2],
                display.sent(attempt.params),
                labels[3],
                attempt.http_status or "-",
                labels[4],
                attempt.request_id or "-",
                labels[5],
                attempt_error(attempt) or "-",
            )
            for attempt in attempts[:HISTORY_ROWS]
        ),
    )
    table = format_html(
        '<table class="customersync-table customersync-history"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
        header,
        rows,
    )
    if len(attempts) <= HISTORY_ROWS:
        return table
    url = reverse("admin:customersync_pushattempt_changelist", current_app=admin_site.name)
    return format_html(
        '{}<p class="customersync-more"><a href="{}?customer__id__exact={}">{}</a></p>',
        table,
        url,
        customer.pk,
        _("Every attempt, in the sync log"),
    )


def conflicts_table(customer: Customer) -> str:
    """Fields Stripe changed while an edit here was not yet pushed (latest 10)."""
    conflicts = (
        list(Conflict.objects.filter(customer=customer).order_by("-detected_at", "-id")[:10]) if customer.pk else []
    )
    if not conflicts:
        return str(_("None."))
    labels = (_("detected"), _("parameter"), _("local edit"), _("value in Stripe"), _("resolution"))
    rows = format_html_join(
        "",
        '<tr><td data-label="{}">{}</td><td data-label="{}"><code>{}</code></td><td data-label="{}">{}</td>'
        '<td data-label="{}">{}</td><td data-label="{}">{}</td></tr>',
        (
            (
                labels[0],
                when(c.detected_at),
                labels[1],
                c.param,
                labels[2],
                shown(c.local_value, "-"),
                labels[3],
                shown(c.remote_value, "-"),
                labels[4],
                c.get_resolution_display(),
            )
            for c in conflicts
        ),
    )
    return format_html(
        '<table class="customersync-table customersync-conflicts"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
        format_html_join("", "<th>{}</th>", ((label,) for label in labels)),
        rows,
    )


@admin.register(EventCursor)
class EventCursorAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Each account's place in Stripe's events log, whether the log could reach it, and the last
    reconcile's figures."""

    list_display = (
        "__str__",
        "caught_up",
        "applied",
        "behind_since",
        "reconciled",
        "seen",
        "drifted",
        "deleted",
        "added",
    )
    fields = (
        "account",
        "event_id",
        "event_created",
        "caught_up_at",
        "applied",
        "behind",
        "behind_at",
        "reconcile_started_at",
        "reconcile_finished_at",
        "seen",
        "drifted",
        "deleted",
        "added",
    )
    readonly_fields = fields

    @admin.display(description=_("last caught up"), ordering="caught_up_at")
    def caught_up(self, obj: EventCursor) -> str:
        return when(obj.caught_up_at)

    @admin.display(description=_("events log out of reach"), ordering="behind_at")
    def behind_since(self, obj: EventCursor) -> str:
        return f"{when(obj.behind_at)}: {obj.behind}" if obj.behind_at else "-"

    @admin.display(description=_("last reconcile finished"), ordering="reconcile_finished_at")
    def reconciled(self, obj: EventCursor) -> str:
        return when(obj.reconcile_finished_at)


@admin.register(Drift)
class DriftAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Fields a reconcile found differing from Stripe with no local change pending."""

    list_display = ("found", "customer", "param", "mirror", "stripe")
    search_fields = ("customer__stripe_id", "param")
    fields = ("customer", "param", "mirror", "stripe", "found")
    readonly_fields = fields

    @admin.display(description=_("found"), ordering="found_at")
    def found(self, obj: Drift) -> str:
        return when(obj.found_at)

    @admin.display(description=_("value in the mirror"))
    def mirror(self, obj: Drift) -> str:
        return truncated(shown(obj.mirror_value, "-"))

    @admin.display(description=_("value in Stripe"))
    def stripe(self, obj: Drift) -> str:
        return truncated(shown(obj.stripe_value, "-"))
