"""The admin: edit customers; saving queues a push of exactly what changed."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from .exceptions import ParamError
from .models import Customer, PushAttempt, SyncStatus
from .sync import loggable

_BADGE_COLOURS = {
    SyncStatus.IN_SYNC: "#2e7d32",
    SyncStatus.PENDING: "#b26a00",
    SyncStatus.FAILED: "#c62828",
    SyncStatus.DELETED: "#616161",
}


class ReadOnlyMixin:
    """The sync log is written by the sync only."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(PushAttempt)
class PushAttemptAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("started_at", "customer", "outcome", "http_status", "request_id", "error_param", "error_message")
    list_filter = ("outcome", "http_status")
    search_fields = ("customer__stripe_id", "customer__email", "request_id", "idempotency_key")
    list_select_related = ("customer",)
    date_hierarchy = "started_at"

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("customersync.view_customer") or super().has_view_permission(request, obj)


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ("__str__", "stripe_id", "email", "sync_badge", "last_pushed_at", "sync_error_summary")
    list_filter = ("sync_status", "livemode")
    search_fields = ("email", "name", "stripe_id")
    readonly_fields = (
        "stripe_id",
        "created",
        "livemode",
        "currency",
        "delinquent",
        "sync_badge",
        "pending_changes",
        "sync_error_details",
        "last_pushed_at",
        "last_pulled_at",
        "sync_history",
    )
    fieldsets = (
        (
            _("Sync"),
            {"fields": ("sync_badge", "pending_changes", "sync_error_details", "last_pushed_at", "last_pulled_at")},
        ),
        (
            _("Contact"),
            {
                "fields": (
                    "name",
                    "email",
                    "phone",
                    "description",
                    "business_name",
                    "individual_name",
                    "preferred_locales",
                    "metadata",
                )
            },
        ),
        (
            _("Billing and invoices"),
            {"fields": ("balance", "invoice_prefix", "next_invoice_sequence", "invoice_settings")},
        ),
        (_("Tax"), {"fields": ("tax_exempt",)}),
        (_("Address"), {"fields": ("address", "shipping")}),
        (_("Payment source"), {"fields": ("default_source",)}),
        (_("Advanced"), {"fields": ("pending_once",), "classes": ("collapse",)}),
        (_("Stripe"), {"fields": ("stripe_id", "created", "livemode", "currency", "delinquent")}),
        (_("Sync history"), {"fields": ("sync_history",)}),
    )

    @admin.display(description=_("sync status"), ordering="sync_status")
    def sync_badge(self, obj: Customer) -> str:
        colour = _BADGE_COLOURS.get(obj.sync_status, "#616161")
        return format_html(
            '<span class="customersync-badge customersync-{}" style="color:#fff;background:{};'
            'padding:1px 6px;border-radius:8px">{}</span>',
            obj.sync_status,
            colour,
            obj.get_sync_status_display(),
        )

    @admin.display(description=_("last error"))
    def sync_error_summary(self, obj: Customer) -> str:
        error = obj.sync_error or {}
        if not error:
            return "-"
        param = f" ({error['param']})" if error.get("param") else ""
        return f"{error.get('message', '')}{param}"

    @admin.display(description=_("last sync error"))
    def sync_error_details(self, obj: Customer) -> str:
        error = obj.sync_error or {}
        if not error:
            return "-"
        labels = (
            ("message", _("Message")),
            ("param", _("Param")),
            ("code", _("Code")),
            ("type", _("Type")),
            ("http_status", _("HTTP status")),
            ("request_id", _("Request id")),
        )
        return format_html(
            '<dl class="customersync-error">{}</dl>',
            format_html_join(
                "",
                "<dt>{}</dt><dd>{}</dd>",
                ((label, error[key]) for key, label in labels if error.get(key) not in (None, "")),
            ),
        )

    @admin.display(description=_("pending changes"))
    def pending_changes(self, obj: Customer) -> str:
        if obj.pk is None:
            return "-"
        try:
            params = obj.pending_params()
        except ParamError as err:
            return str(err)
        return loggable(params) if params else _("Nothing to send.")

    @admin.display(description=_("latest attempts"))
    def sync_history(self, obj: Customer) -> str:
        if obj.pk is None:
            return "-"
        attempts = list(PushAttempt.objects.filter(customer=obj).order_by("-started_at", "-id")[:20])
        if not attempts:
            return _("No push yet.")
        header = format_html_join(
            "",
            "<th>{}</th>",
            (
                (label,)
                for label in (
                    _("started"),
                    _("outcome"),
                    _("params sent"),
                    _("HTTP status"),
                    _("Stripe request id"),
                    _("error"),
                )
            ),
        )
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    a.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                    a.get_outcome_display(),
                    loggable(a.params),
                    a.http_status or "",
                    a.request_id,
                    f"{a.error_message} ({a.error_param})" if a.error_param else a.error_message,
                )
                for a in attempts
            ),
        )
        return format_html('<table class="customersync-history"><tr>{}</tr>{}</table>', header, rows)
