"""The site's own forms and admin of the owner model (``CUSTOMERSYNC["OWNER_MODEL"]``).

A form::

    class OrganizationForm(OwnerFormMixin, forms.ModelForm):
        class Meta:
            model = Organization
            fields = ["name", "billing_email"]

An admin::

    @admin.register(Organization)
    class OrganizationAdmin(OwnerAdminMixin, admin.ModelAdmin):
        pass

A value Stripe would refuse is a form error on the owner's field (nothing is
saved, nothing queued) instead of the ``ValidationError`` an owner save raises.
The admin adds a read-only "Stripe customer" section to the owner's page: the
customer's sync status, its last error, what the next push sends, the mapped
values not sent because Stripe would refuse them (written where no save checked
them) and a link to the customer's page; and when Stripe refused the last push
because of a value that comes from one of the owner's fields, its answer is
shown on that field. The forms of the page's inlines whose model a mapped path
passes through (the owner's profile) check Stripe's rules too: a refused value
is an error on the inline's field.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import NON_FIELD_ERRORS, FieldDoesNotExist, ValidationError
from django.forms import Media
from django.forms.utils import ErrorDict
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from ..models import Customer, SyncStatus
from ..owner.customers import check_owner, for_owner, unsent
from ..owner.mapping import mapping
from ..owner.related import check_related
from . import display

# The read-only fields of the "Stripe customer" section (methods of OwnerAdminMixin).
PANEL_FIELDS = (
    "customersync_status",
    "customersync_error",
    "customersync_pending",
    "customersync_unsent",
    "customersync_customer",
)
# Which parts of the last error the section shows.
PANEL_ERROR_KEYS = ("message", "code", "param")

# Where an owner shown by the admin keeps its customer for the rest of the request.
_CUSTOMER = "_customersync_admin_customer"
_MISSING = object()


def customer_of(owner: Any) -> Customer | None:
    """The owner's customer, looked up once per owner instance (the form and each panel row ask)."""
    if owner is None or owner.pk is None:
        return None
    found = owner.__dict__.get(_CUSTOMER, _MISSING)
    if found is _MISSING:
        found = owner.__dict__[_CUSTOMER] = for_owner(owner)
    return found


def stripe_refusal(customer: Customer | None) -> dict[str, Any] | None:
    """The error of the customer's last push if Stripe refused it (a failed push with Stripe's answer)."""
    if customer is None or customer.sync_status != SyncStatus.FAILED:
        return None
    error = customer.sync_error or {}
    return error if error.get("http_status") else None


class OwnerFormMixin:
    """For the site's own ``ModelForm`` of the owner model, or of a model a mapped path passes
    through (a profile): Stripe's rules as form errors.

    After the model's validation, ``check_owner`` (or ``check_related``) runs on
    the instance the form built; each message goes on the form's field of that
    name, or, when the form does not have it, to the form's non-field errors
    (named by the model field's label). ``is_valid()`` is then False and the
    view saves nothing.
    """

    instance: Any
    fields: dict[str, Any]

    def _post_clean(self) -> None:
        super()._post_clean()
        found = mapping()
        if found is None:
            return
        try:
            if isinstance(self.instance, found.model):
                check_owner(self.instance)
            else:
                check_related(self.instance)  # a model a mapped path passes through
        except ValidationError as err:
            for name, messages in err.message_dict.items():
                if name in self.fields:
                    self.add_error(name, messages)
                else:
                    label = _field_label(self.instance, name)
                    self.add_error(None, [f"{label}: {m}" if label else m for m in messages])


class _OwnerAdminForm(OwnerFormMixin):
    """The admin's owner form: also shows Stripe's refusal of the last push on the owner's field."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.is_bound:
            return  # the operator's new values are being checked: their errors are the ones that count
        error = stripe_refusal(customer_of(self.instance))
        found = mapping()
        if error is None or found is None or not error.get("param"):
            return
        name = found.field_for_param(error["param"])
        if name is None or name not in self.fields:
            return  # the section still shows it
        parts = {"message": error.get("message") or "", "code": error.get("code")}
        if parts["code"]:
            message = _("Stripe refused the last push (%(code)s): %(message)s") % parts
        else:
            message = _("Stripe refused the last push: %(message)s") % parts
        renderer = self.renderer
        # An unbound form never cleans, so these are the errors it renders.
        self._errors = ErrorDict({name: self.error_class([message], renderer=renderer)}, renderer=renderer)


class OwnerAdminMixin:
    """For the site's own ``ModelAdmin`` of the owner model (put it first among the bases).

    Its forms use ``OwnerFormMixin``; the change page gets a read-only section,
    ``customersync_fieldset_title``, after the site's own fieldsets (declared
    or not).
    """

    customersync_fieldset_title = _("Stripe customer")
    admin_site: admin.AdminSite

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (_OwnerAdminForm, form), {"__module__": form.__module__})

    def get_formsets_with_inlines(self, request: HttpRequest, obj: Any = None) -> Any:
        """The inlines' formsets; the forms of an inline whose model a mapped path passes through
        (the owner's profile) check Stripe's rules as the owner's form does."""
        found = mapping()
        for formset, inline in super().get_formsets_with_inlines(request, obj):
            if found is not None and inline.model in found.related and not issubclass(formset.form, OwnerFormMixin):
                form = formset.form
                checked = type(form.__name__, (OwnerFormMixin, form), {"__module__": form.__module__})
                formset = type(formset.__name__, (formset,), {"form": checked, "__module__": formset.__module__})
            yield formset, inline

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is None:
            return fields
        return fields + tuple(name for name in PANEL_FIELDS if name not in fields)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        # The section's rows appear there only: not again in the site's (or the default) fieldsets.
        kept = []
        for title, options in fieldsets:
            rows = [row for row in (_without_panel(row) for row in options.get("fields", ())) if row]
            if rows:
                kept.append((title, {**options, "fields": rows}))
        return [*kept, (self.customersync_fieldset_title, {"fields": PANEL_FIELDS, "classes": ("customersync",)})]

    @property
    def media(self) -> Media:
        return super().media + Media(css={"all": ("customersync/admin.css",)})

    @admin.display(description=_("sync status"))
    def customersync_status(self, obj: Any) -> str:
        customer = customer_of(obj)
        if customer is None:
            return str(_("No Stripe customer yet"))
        return display.badge(customer)

    @admin.display(description=_("last error"))
    def customersync_error(self, obj: Any) -> str:
        customer = customer_of(obj)
        if customer is None or not customer.sync_error:
            return "-"
        details = display.error_details(customer.sync_error, PANEL_ERROR_KEYS)
        if customer.sync_error.get("http_status"):
            return format_html("{} {}", _("Stripe answered:"), details)
        return details

    @admin.display(description=_("next push sends"))
    def customersync_pending(self, obj: Any) -> str:
        customer = customer_of(obj)
        if customer is None:
            return "-"
        if not customer.needs_push():
            return str(_("Nothing to send."))
        return display.pending_changes(customer, redacted=True)

    @admin.display(description=_("not sent"))
    def customersync_unsent(self, obj: Any) -> str:
        if customer_of(obj) is None:
            return "-"
        return display.unsent(unsent(obj)) or "-"

    @admin.display(description=_("customer"))
    def customersync_customer(self, obj: Any) -> str:
        customer = customer_of(obj)
        if customer is None:
            return str(_("No Stripe customer yet"))
        return display.admin_link(customer, self.admin_site, customer.stripe_id or customer)


def _without_panel(row: Any) -> Any:
    """A fieldset row (a name, or a tuple of names on one line) without the section's fields."""
    if isinstance(row, (list, tuple)):
        names = tuple(name for name in row if name not in PANEL_FIELDS)
        return names if len(names) > 1 else (names[0] if names else None)
    return None if row in PANEL_FIELDS else row


def _field_label(instance: Any, name: str) -> str:
    if name == NON_FIELD_ERRORS:
        return ""
    try:
        return str(instance._meta.get_field(name).verbose_name).capitalize()
    except FieldDoesNotExist:
        return name
