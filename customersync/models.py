"""The local mirror of Stripe customers."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .diff import diff, normalize
from .exceptions import ParamError
from .params import STATE_PARAMS, Param, Shape, get_path, set_path

# Top-level model fields that hold updatable customer state, in table order.
STATE_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(p.field for p in STATE_PARAMS))

# Columns only the sync writes (under a row lock); an edit's save() never
# writes them, so a form loaded before a push cannot roll back what Stripe
# confirmed meanwhile.
SYNC_OWNED_FIELDS = frozenset(
    {"stripe_data", "confirmed_at", "last_pushed_at", "last_pulled_at", "created", "livemode", "currency", "delinquent"}
)


@dataclass
class Merge:
    """What ``merge_remote`` did: local edits kept, and conflicts as (param, local, remote)."""

    kept: list[str] = field(default_factory=list)
    conflicts: list[tuple[str, Any, Any]] = field(default_factory=list)


class SyncStatus(models.TextChoices):
    IN_SYNC = "in_sync", _("In sync")
    PENDING = "pending", _("Pending")
    FAILED = "failed", _("Failed")
    DELETED = "deleted", _("Deleted in Stripe")


class TaxExempt(models.TextChoices):
    NONE = "none", _("None")
    EXEMPT = "exempt", _("Exempt")
    REVERSE = "reverse", _("Reverse charge")


class Customer(models.Model):
    """One Stripe customer: the state operators want, and what Stripe last confirmed.

    Updatable fields carry Stripe's own names; nested objects and lists are JSON
    in Stripe's shape. ``stripe_data`` is the customer as Stripe last returned
    it (a pull or a push response): the base every diff is computed against.
    Saving a change to an updatable field marks the customer pending and, on
    commit, queues a push of exactly the changed parameters.
    """

    stripe_id = models.CharField(_("Stripe id"), max_length=255, unique=True, null=True, blank=True)

    # Contact
    email = models.CharField(_("email"), max_length=512, blank=True)
    name = models.CharField(_("name"), max_length=256, blank=True)
    business_name = models.CharField(_("business name"), max_length=256, blank=True)
    individual_name = models.CharField(_("individual name"), max_length=256, blank=True)
    phone = models.CharField(_("phone"), max_length=64, blank=True)
    description = models.TextField(_("description"), blank=True)
    preferred_locales = models.JSONField(_("preferred locales"), default=list, blank=True)
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)

    # Billing and invoices
    # Nullable: the mirror holds what Stripe reported, and "not reported" is not 0.
    balance = models.BigIntegerField(_("balance"), null=True, blank=True, help_text=_("In the smallest currency unit."))
    invoice_prefix = models.CharField(_("invoice prefix"), max_length=12, blank=True)
    next_invoice_sequence = models.PositiveIntegerField(_("next invoice sequence"), null=True, blank=True)
    invoice_settings = models.JSONField(_("invoice settings"), default=dict, blank=True)

    # Tax
    tax_exempt = models.CharField(
        _("tax exempt"), max_length=8, choices=TaxExempt.choices, default=TaxExempt.NONE, blank=True
    )

    # Address and shipping
    address = models.JSONField(_("address"), null=True, blank=True)
    shipping = models.JSONField(_("shipping"), null=True, blank=True)

    # Payment source
    default_source = models.CharField(_("default source"), max_length=255, blank=True)

    # Write-once values and request options for the next push (source, card,
    # bank_account tokens, tax[ip_address], cash_balance settings, expand...):
    # sent once, never mirrored, cleared after a successful push.
    pending_once = models.JSONField(_("write-once parameters"), default=dict, blank=True)

    # Owned by Stripe, shown read-only.
    created = models.DateTimeField(_("created in Stripe"), null=True, blank=True)
    livemode = models.BooleanField(_("live mode"), default=False)
    currency = models.CharField(_("currency"), max_length=3, blank=True)
    delinquent = models.BooleanField(_("delinquent"), null=True, blank=True)

    # Sync bookkeeping.
    stripe_data = models.JSONField(_("last confirmed by Stripe"), null=True, blank=True, editable=False)
    # When that state was current (a pull, a push's answer, an event's time):
    # webhook events older than this are out of order and ignored.
    confirmed_at = models.DateTimeField(_("confirmed at"), null=True, blank=True, editable=False)
    sync_status = models.CharField(
        _("sync status"), max_length=8, choices=SyncStatus.choices, default=SyncStatus.IN_SYNC, db_index=True
    )
    sync_error = models.JSONField(_("last sync error"), null=True, blank=True, editable=False)
    last_pushed_at = models.DateTimeField(_("last pushed"), null=True, blank=True, editable=False)
    last_pulled_at = models.DateTimeField(_("last pulled"), null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("customer")
        verbose_name_plural = _("customers")
        ordering = ("-id",)
        permissions = [
            ("push_customer", _("Can push customers to Stripe")),
            ("pull_customer", _("Can refresh customers from Stripe")),
        ]

    def __str__(self) -> str:
        return self.name or self.email or self.stripe_id or f"customer #{self.pk}"

    # -- state -------------------------------------------------------------

    def desired_state(self) -> dict[str, Any]:
        """The updatable state as operators want it, in Stripe's shape."""
        values = {name: getattr(self, name) for name in STATE_FIELDS}
        state: dict[str, Any] = {}
        for param in STATE_PARAMS:
            set_path(state, param.path, get_path(values, param.path))
        return state

    def pending_params(self) -> dict[str, Any]:
        """The exact params the next push will send (``{}``: nothing to send)."""
        return diff(self.stripe_data or {}, self.desired_state(), self.pending_once)

    def merge_remote(
        self,
        remote: dict[str, Any],
        base: dict[str, Any] | None,
        *,
        remote_wins: bool = False,
        at: dt.datetime | None = None,
    ) -> Merge:
        """Take Stripe's ``remote`` object, keeping local edits not yet in Stripe.

        A parameter takes the remote value unless the local value differs from
        ``base`` (what Stripe had before, or what a push sent) and from remote:
        that is an edit made here and not yet pushed, and it is kept. When
        Stripe changed that parameter too (remote differs from base) it is a
        conflict: the local edit is kept, or dropped with ``remote_wins``. Also
        sets ``stripe_data``, ``confirmed_at`` (``at``, default now) and the
        fields Stripe owns.
        """
        local = self.desired_state()
        result = Merge()
        merged: dict[str, Any] = {}
        for param in STATE_PARAMS:
            mine = get_path(local, param.path)
            theirs = get_path(remote, param.path)
            before = _norm(param, get_path(base, param.path))
            if _norm(param, mine) in (before, _norm(param, theirs)):
                set_path(merged, param.path, _to_local(param, theirs))
                continue
            if base is not None and _norm(param, theirs) != before:
                result.conflicts.append((param.name, mine, theirs))
                if remote_wins:
                    set_path(merged, param.path, _to_local(param, theirs))
                    continue
            result.kept.append(param.name)
            set_path(merged, param.path, mine)
        for name in STATE_FIELDS:
            setattr(self, name, merged[name])
        self.stripe_id = remote.get("id") or self.stripe_id
        created = remote.get("created")
        self.created = dt.datetime.fromtimestamp(created, tz=dt.timezone.utc) if created else None
        self.livemode = bool(remote.get("livemode"))
        self.currency = remote.get("currency") or ""
        self.delinquent = remote.get("delinquent")
        self.stripe_data = remote
        self.confirmed_at = at or timezone.now()
        return result

    def refresh_sync_status(self, params: dict[str, Any] | None = None) -> bool:
        """Set ``sync_status`` from the pending params (given, or computed); True when a push is needed.

        A customer without a Stripe id is created in Stripe by its first push.
        """
        if self.sync_status == SyncStatus.DELETED:
            return False
        if not self.stripe_id:
            self.sync_status = SyncStatus.PENDING
            return True
        if params is None:
            try:
                params = self.pending_params()
            except ParamError as err:
                self.sync_status = SyncStatus.FAILED
                self.sync_error = {"type": "local_error", "param": err.param, "message": err.message}
                return False
        if params:
            self.sync_status = SyncStatus.PENDING
            return True
        if self.sync_status in (SyncStatus.PENDING, SyncStatus.FAILED):
            self.sync_status = SyncStatus.IN_SYNC
            self.sync_error = None
        return False

    def clean(self) -> None:
        super().clean()
        self.validate_for_stripe()

    def validate_for_stripe(self) -> dict[str, Any] | None:
        """Raise ``ValidationError`` keyed by Stripe param names when a value breaks Stripe's rules.

        Run by ``clean()`` (forms) and by ``save()``, so a bad value never reaches the outbox.
        Returns the pending params it computed on the way (None without a Stripe id).
        """
        from .validation import validate

        errors: dict[str, list[str]] = {
            name: [_("Expected %(kind)s in Stripe's shape.") % {"kind": kind}]
            for name, (types, kind) in _JSON_SHAPES.items()
            if not isinstance(getattr(self, name), types)
        }
        if errors:
            raise ValidationError(errors)
        desired = self.desired_state()
        errors = validate(desired, self.pending_once)
        if errors and self.stripe_data:
            # Judge only what this edit changes: a value Stripe already holds
            # must never block saving another field.
            changed = {
                p.field
                for p in STATE_PARAMS
                if _norm(p, get_path(desired, p.path)) != _norm(p, get_path(self.stripe_data, p.path))
            }
            errors = {k: v for k, v in errors.items() if k.split("[", 1)[0] in changed or k.startswith(_ONCE_ROOTS)}
        params = None
        if not errors and self.stripe_id:
            try:
                params = diff(self.stripe_data or {}, desired, self.pending_once)
            except ParamError as err:
                errors = {err.param: [err.message]}
        if errors:
            raise ValidationError(errors)
        return params

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save an edit. When it changes what Stripe has, the same transaction
        writes an outbox record, and a push is queued when it commits."""
        from .sync import record_change

        if not self._state.adding and self.pk is not None:
            # Validate and diff against what Stripe confirmed as stored now, not
            # a copy loaded before a push confirmed something newer.
            self.stripe_data = type(self)._base_manager.filter(pk=self.pk).values_list("stripe_data", flat=True).first()
            if kwargs.get("update_fields") is None:
                kwargs["update_fields"] = [
                    f.name for f in self._meta.concrete_fields if not f.primary_key and f.name not in SYNC_OWNED_FIELDS
                ]
        params = self.validate_for_stripe()  # computes the diff once, for the status too
        needs_push = self.refresh_sync_status(params)
        if kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], "sync_status", "sync_error"}
        # No savepoint: inside a caller's transaction this adds no round trips.
        with transaction.atomic(using=kwargs.get("using"), savepoint=False):
            super().save(*args, **kwargs)
            if needs_push:
                record_change(self)

    def save_synced(self) -> None:
        """Write every column, outbox untouched: for the sync, under the row lock."""
        super().save()


# Error keys of write-once values and options: always new, always judged.
_ONCE_ROOTS = ("tax[", "cash_balance[")

_JSON_SHAPES: dict[str, tuple[tuple[type, ...], str]] = {
    "metadata": ((dict,), "an object of keys and values"),
    "preferred_locales": ((list,), "a list of locales"),
    "invoice_settings": ((dict,), "an object"),
    "address": ((dict, type(None)), "an object or null"),
    "shipping": ((dict, type(None)), "an object or null"),
    "pending_once": ((dict,), "an object"),
}


def _norm(param: Param, value: Any) -> Any:
    try:
        return normalize(param, value)
    except ParamError:
        return ("invalid", repr(value))


def _to_local(param: Param, value: Any) -> Any:
    """A value from Stripe as the model stores it."""
    if param.shape is Shape.SCALAR:
        if isinstance(value, dict):  # expanded object
            value = value.get("id")
        if value is None and param.type is str:
            return param.unset_value or ""
        return value
    if param.shape is Shape.MAP:
        return dict(value or {})
    if param.shape is Shape.LIST:
        return list(value or [])
    return value or None


class PushState(models.TextChoices):
    PENDING = "pending", _("Pending")
    SENDING = "sending", _("Sending")
    SENT = "sent", _("Sent")
    NOTHING = "nothing", _("Nothing to send")
    SUPERSEDED = "superseded", _("Joined a later push")
    FAILED = "failed", _("Failed")


class PendingPush(models.Model):
    """The outbox: one row per save that changed an updatable field.

    Written in the same transaction as the customer row, so a committed edit
    always leaves a record even if the broker never sees the task; the sweeper
    re-enqueues records that wait too long. When a push takes a record, the
    params it sends are frozen on it with an idempotency key derived from the
    record, so every retry of that change sends the same params under the same
    key, and a new change gets a new key.
    """

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="pushes")
    state = models.CharField(_("state"), max_length=10, choices=PushState.choices, default=PushState.PENDING)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    enqueued_at = models.DateTimeField(_("last enqueued"), null=True, blank=True)
    key = models.UUIDField(_("record key"), default=uuid.uuid4, unique=True, editable=False)
    # Frozen when the push takes this record (SENDING), tokens included: the
    # exact body is kept as text because a retry must resend the same bytes
    # (a jsonb column does not keep key order).
    params = models.JSONField(_("params"), null=True, blank=True)
    body = models.TextField(_("request body"), blank=True)
    sent_state = models.JSONField(null=True, blank=True)
    sent_once = models.JSONField(null=True, blank=True)
    frozen_at = models.DateTimeField(_("frozen"), null=True, blank=True)
    attempts = models.PositiveIntegerField(_("failed attempts"), default=0)
    # "create" (POST /v1/customers) for a customer not yet in Stripe, else "update".
    operation = models.CharField(_("operation"), max_length=6, default="update")
    completed_at = models.DateTimeField(_("completed"), null=True, blank=True)
    superseded_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        verbose_name = _("pending push")
        verbose_name_plural = _("pending pushes")
        indexes = [models.Index(fields=["state", "enqueued_at"], name="customersync_push_sweep")]

    def __str__(self) -> str:
        return f"push #{self.pk} of {self.customer_id} ({self.state})"

    @property
    def idempotency_key(self) -> str:
        return f"customersync-{self.key}"


class AttemptOutcome(models.TextChoices):
    IN_FLIGHT = "in_flight", _("In flight (or the worker died)")
    SUCCEEDED = "succeeded", _("Succeeded")
    RETRY = "retry", _("Will retry")
    FAILED = "failed", _("Failed")
    DELETED = "deleted", _("Deleted in Stripe")


class PushAttempt(models.Model):
    """The sync log: one row per request sent (token values redacted, never the key)."""

    push = models.ForeignKey(PendingPush, on_delete=models.CASCADE, related_name="attempts_log")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="sync_log")
    started_at = models.DateTimeField(_("started"), auto_now_add=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    params = models.JSONField(_("params sent"), default=dict)
    idempotency_key = models.CharField(_("idempotency key"), max_length=64)
    outcome = models.CharField(
        _("outcome"), max_length=10, choices=AttemptOutcome.choices, default=AttemptOutcome.IN_FLIGHT
    )
    http_status = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    request_id = models.CharField(_("Stripe request id"), max_length=255, blank=True)
    error_type = models.CharField(_("error type"), max_length=64, blank=True)
    error_code = models.CharField(_("error code"), max_length=64, blank=True)
    error_param = models.CharField(_("error param"), max_length=255, blank=True)
    error_message = models.TextField(_("error message"), blank=True)

    class Meta:
        verbose_name = _("push attempt")
        verbose_name_plural = _("sync log")
        ordering = ("-started_at", "-id")

    def __str__(self) -> str:
        return f"attempt #{self.pk} of {self.customer_id}: {self.outcome}"


class PushLease(models.Model):
    """Who may send requests for a customer right now: at most one holder.

    Taken with a conditional UPDATE (works on every database), held across
    freeze, request and confirmation, and released after. A holder that died
    without releasing is replaced once the lease expires, or at once when it
    was a process on this host that no longer exists.
    """

    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, primary_key=True, related_name="+")
    owner = models.CharField(max_length=255, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)


class Resolution(models.TextChoices):
    LOCAL_WINS = "local_wins", _("Local edit kept (pushed over Stripe's value)")
    REMOTE_WINS = "remote_wins", _("Stripe's value taken (local edit dropped)")


class Conflict(models.Model):
    """Stripe changed a field that an operator had also changed here and not yet pushed."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="conflicts")
    detected_at = models.DateTimeField(_("detected"), auto_now_add=True)
    param = models.CharField(_("parameter"), max_length=255)
    local_value = models.JSONField(_("local value"), null=True, blank=True)
    remote_value = models.JSONField(_("value in Stripe"), null=True, blank=True)
    source = models.CharField(_("seen in"), max_length=16)  # pull, webhook
    resolution = models.CharField(_("resolution"), max_length=12, choices=Resolution.choices)

    class Meta:
        verbose_name = _("conflict")
        verbose_name_plural = _("conflicts")
        ordering = ("-detected_at", "-id")

    def __str__(self) -> str:
        return f"{self.param} of {self.customer_id}: {self.resolution}"


class WebhookEvent(models.Model):
    """A Stripe event received by the webhook view, handled once."""

    event_id = models.CharField(_("event id"), max_length=255, unique=True)
    type = models.CharField(_("type"), max_length=64)
    stripe_id = models.CharField(_("customer"), max_length=255, blank=True, db_index=True)
    created = models.DateTimeField(_("created in Stripe"))
    received_at = models.DateTimeField(_("received"), auto_now_add=True)
    outcome = models.CharField(_("outcome"), max_length=32)
    idempotency_key = models.CharField(_("request idempotency key"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("webhook event")
        verbose_name_plural = _("webhook events")
        ordering = ("-received_at", "-id")

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}: {self.outcome}"


class PullCursor(models.Model):
    """Where an interrupted ``customersync_pull`` resumes."""

    name = models.CharField(max_length=64, primary_key=True)
    starting_after = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField()
    complete_walk = models.BooleanField(default=False)
    pulled = models.PositiveIntegerField(default=0)
