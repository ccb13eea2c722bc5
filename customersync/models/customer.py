"""The customer: the mirror of one Stripe customer, and its sync status."""

from __future__ import annotations

import datetime as dt
from contextlib import nullcontext
from typing import Any

from django.db import DatabaseError, models, router, transaction
from django.db.models.signals import post_save, pre_save
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import signals
from ..conf import owner_model_label
from ..core.diff import diff
from ..core.merge import Merge, merge
from ..core.params import TABLE, get_path, set_path
from ..exceptions import ParamError

OWNER_MODEL = owner_model_label()

# Columns only the sync writes (under a row lock); an edit's save() never
# writes them, so a form loaded before a push cannot roll back what Stripe
# confirmed meanwhile.
SYNC_OWNED_FIELDS = frozenset(
    {
        "stripe_data",
        "sync_version",
        "confirmed_at",
        "last_pushed_at",
        "last_pulled_at",
        "created",
        "livemode",
        "currency",
        "delinquent",
    }
)


class SyncStatus(models.TextChoices):
    IN_SYNC = "in_sync", _("In sync")
    PENDING = "pending", _("Pending")
    FAILED = "failed", _("Failed")
    DELETED = "deleted", _("Deleted in Stripe")


class TaxExempt(models.TextChoices):
    NONE = "none", _("None")
    EXEMPT = "exempt", _("Exempt")
    REVERSE = "reverse", _("Reverse charge")


class CustomerQuerySet(models.QuerySet):
    """The sync status's transitions for many customers at once (one UPDATE each).

    With the instance methods of ``Customer`` (``settle``, ``set_failed``),
    these are the only places that write ``sync_status``.
    """

    def mark_pending(self) -> int:
        """Something is queued for Stripe; a failure stays visible until a push settles it."""
        return self.exclude(sync_status__in=[SyncStatus.FAILED, SyncStatus.PENDING]).update(
            sync_status=SyncStatus.PENDING
        )

    def retry_failed(self) -> int:
        """An operator asked to try failed customers again."""
        return self.filter(sync_status=SyncStatus.FAILED).update(sync_status=SyncStatus.PENDING)

    def mark_failed(self, error: dict[str, Any]) -> int:
        return self.update(sync_status=SyncStatus.FAILED, sync_error=error)

    def note_error(self, error: dict[str, Any]) -> int:
        """A retryable error: shown, while the customer stays pending."""
        return self.update(sync_error=error)

    def mark_deleted(self, **fields: Any) -> int:
        """Gone from Stripe (a 404, a whole pull that did not meet them, a deletion event)."""
        return self.update(sync_status=SyncStatus.DELETED, **fields)

    def mark_settled(self) -> int:
        """A pending customer turned out to have nothing to send."""
        return self.filter(sync_status=SyncStatus.PENDING).update(sync_status=SyncStatus.IN_SYNC, sync_error=None)


class Customer(models.Model):
    """One Stripe customer: the state operators want, and what Stripe last confirmed.

    Updatable fields carry Stripe's own names; nested objects and lists are JSON
    in Stripe's shape. ``stripe_data`` is the customer as Stripe last returned
    it (a pull or a push response): the base every diff is computed against.
    Saving a change to an updatable field marks the customer pending and, on
    commit, queues a push of exactly the changed parameters.
    """

    # Unique within its account (the constraints below), not across accounts.
    stripe_id = models.CharField(_("Stripe id"), max_length=255, null=True, blank=True, db_index=True)
    # The Stripe account it lives in; None: the default platform's own account.
    account = models.ForeignKey(
        "customersync.Account",
        verbose_name=_("Stripe account"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="customers",
    )

    if OWNER_MODEL:
        # The site's object this customer belongs to (CUSTOMERSYNC["OWNER_MODEL"]);
        # deleting it unlinks the customer, never deletes it (nor in Stripe): what
        # names the owner goes, here and in Stripe (owner/unlink.py).
        owner = models.ForeignKey(
            OWNER_MODEL,
            verbose_name=_("owner"),
            null=True,
            blank=True,
            on_delete=models.SET_NULL,
            related_name="customersync_customers",
        )
    # The owner's mapped values as last applied here (owner/mapping.py): an owner save
    # sends only those that changed since, never undoes a change made in Stripe.
    owner_values = models.JSONField(_("values from the owner"), default=dict, blank=True, editable=False)

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
    # Bumped whenever stripe_data changes: an edit's write is guarded by the version it
    # was diffed against, instead of re-reading the confirmed state first.
    sync_version = models.PositiveBigIntegerField(_("confirmed state version"), default=0, editable=False)
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

    objects = CustomerQuerySet.as_manager()

    class Meta:
        verbose_name = _("customer")
        verbose_name_plural = _("customers")
        ordering = ("-id",)
        permissions = [
            ("push_customer", _("Can push customers to Stripe")),
            ("pull_customer", _("Can refresh customers from Stripe")),
        ]
        constraints = [
            models.UniqueConstraint(fields=["account", "stripe_id"], name="customersync_stripe_id_per_account"),
            models.UniqueConstraint(
                fields=["stripe_id"], condition=models.Q(account=None), name="customersync_stripe_id_default_account"
            ),
        ]
        if OWNER_MODEL:
            # One customer per owner in each account (NULLs, unlinked customers, do not collide).
            constraints += [
                models.UniqueConstraint(fields=["owner", "account"], name="customersync_one_customer_per_owner"),
                models.UniqueConstraint(
                    fields=["owner"], condition=models.Q(account=None), name="customersync_one_default_per_owner"
                ),
            ]

    def __str__(self) -> str:
        return self.name or self.email or self.stripe_id or f"customer #{self.pk}"

    # -- state -------------------------------------------------------------

    def desired_state(self) -> dict[str, Any]:
        """The updatable state as operators want it, in Stripe's shape."""
        values = {name: getattr(self, name) for name in TABLE.state_fields}
        state: dict[str, Any] = {}
        for param in TABLE.state:
            set_path(state, param.path, get_path(values, param.path))
        return state

    def pending_params(self, desired: dict[str, Any] | None = None) -> dict[str, Any]:
        """The exact params the next push will send (``{}``: nothing to send).

        ``desired``: the desired state when the caller holds it already (a merge's ``state``).
        """
        return diff(self.stripe_data or {}, self.desired_state() if desired is None else desired, self.pending_once)

    def needs_push(self, params: dict[str, Any] | None = None, *, desired: dict[str, Any] | None = None) -> bool:
        """Whether Stripe is owed something: the one answer every caller uses.

        A customer without a Stripe id is owed its creation; one whose desired
        state the endpoint cannot express is owed a push that records the error.
        ``params``: the pending params when the caller computed them already;
        ``desired``: the desired state when the caller holds it (see ``pending_params``).
        """
        if self.sync_status == SyncStatus.DELETED:
            return False
        if not self.stripe_id:
            return True
        if params is not None:
            return bool(params)
        try:
            return bool(self.pending_params(desired))
        except ParamError:
            return True

    def merge_remote(
        self,
        remote: dict[str, Any],
        base: dict[str, Any] | None,
        *,
        remote_wins: bool = False,
        at: dt.datetime | None = None,
    ) -> Merge:
        """Take Stripe's ``remote`` object, keeping local edits not yet in Stripe (see ``merge.merge``).

        Also sets ``stripe_data``, ``confirmed_at`` (``at``, default now) and
        the fields Stripe owns.
        """
        result = merge(self.desired_state(), remote, base, remote_wins=remote_wins)
        for name in TABLE.state_fields:
            setattr(self, name, result.state[name])
        self.stripe_id = remote.get("id") or self.stripe_id
        created = remote.get("created")
        self.created = dt.datetime.fromtimestamp(created, tz=dt.timezone.utc) if created else None
        self.livemode = bool(remote.get("livemode"))
        self.currency = remote.get("currency") or ""
        self.delinquent = remote.get("delinquent")
        if remote != self.stripe_data or not self.sync_version:
            self.sync_version = (self.sync_version or 0) + 1  # guards edits diffed against the old state
        self.stripe_data = remote
        self.confirmed_at = at or timezone.now()
        return result

    # -- the sync status: its transitions on one customer ---------------------

    def settle(self, pending: bool, *, keep_failure: bool = False, clear_error: bool = False) -> None:
        """Pending when Stripe is owed something, else in sync (and no error).

        ``keep_failure``: a failed customer stays failed while its edit is
        still unsent (a pull does not hide a refusal). ``clear_error``: Stripe
        just accepted a push, so the last error is history.
        """
        if clear_error:
            self.sync_error = None
        if not pending:
            self.sync_status, self.sync_error = SyncStatus.IN_SYNC, None
        elif not (keep_failure and self.sync_status == SyncStatus.FAILED):
            self.sync_status = SyncStatus.PENDING

    def revive(self) -> None:
        """Stripe has this customer after all (it was marked deleted)."""
        if self.sync_status == SyncStatus.DELETED:
            self.sync_status, self.sync_error = SyncStatus.IN_SYNC, None

    def clean_fields(self, exclude: Any = None) -> None:
        """Django's checks of each field, except those holding a value ``validate_for_stripe``
        refuses: ``clean()`` reports them by their Stripe names, and Django would first turn
        a dict given for a text field into its repr."""
        from .validation import refused_fields

        super().clean_fields(exclude={*(exclude or ()), *refused_fields(self)})

    def clean(self) -> None:
        super().clean()
        self.validate_for_stripe()

    def validate_for_stripe(self) -> dict[str, Any] | None:
        """Raise ``ValidationError`` keyed by Stripe param names when a value breaks Stripe's rules.

        Run by ``clean()`` (forms) and by ``save()``, so a bad value never reaches the outbox.
        Returns the pending params it computed on the way (None without a Stripe id).
        """
        from .validation import check_edit

        return check_edit(self)

    def save(self, **kwargs: Any) -> None:
        """Save an edit. When it changes what Stripe has, the same transaction
        writes an outbox record, and a push is queued when it commits.

        The diff is against the confirmed state as stored at the write, never a
        copy loaded before a push confirmed something newer: a stored customer is
        written by a ``QuerySet.update()`` guarded by the version of the state it
        was diffed against (``sync_version``), its row count the guard; when a
        sync confirmed a newer state meanwhile, that state is read and the edit
        diffed and written again. The outbox record of a change to a copy that
        was pending joins the push most likely queued, after a look; that of a
        copy that was not, or of a new customer, is written without one
        (``push.outbox.record_change``). An edit never writes the columns the sync
        owns (``SYNC_OWNED_FIELDS``). ``pre_save`` and ``post_save`` are sent as
        ``Model.save()`` sends them; a new customer is ``Model.save()``'s own.

        The model only announces the change (``signals.customer_changed``); the
        outbox, connected in ``AppConfig.ready()``, records and publishes it.
        """
        using = kwargs["using"] = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        if kwargs.get("force_insert") or self._state.adding or self.pk is None or self._state.db != using:
            needs_push = self._decide()  # a refused value raises before the transaction
            # No savepoint: inside a caller's transaction this adds no round trips.
            with transaction.atomic(using=using, savepoint=False):
                super().save(**kwargs)
                if needs_push:
                    signals.customer_changed.send(sender=Customer, customer=self, queued=False)
            return
        update_fields = kwargs.get("update_fields")
        if update_fields is None:  # every field loaded, but those the sync owns
            skip = {*SYNC_OWNED_FIELDS, *self.get_deferred_fields()}
            fields = self._meta.concrete_fields
            update_fields = [f.name for f in fields if not (f.primary_key or {f.name, f.attname} & skip)]
        elif not update_fields:
            return  # as Model.save() with no fields to update
        self._write_edit(using, frozenset({*update_fields, "sync_status", "sync_error"}))

    def _write_edit(self, using: str, names: frozenset[str]) -> None:
        cls = type(self)
        fields = [cls._meta.get_field(name) for name in names]
        pre_save.send(sender=cls, instance=self, raw=False, using=using, update_fields=names)
        rows = cls._base_manager.using(using)
        # A copy that was pending most likely has its push queued, which the change joins after a
        # look; one that was not, most likely not: its record is written without a look.
        queued = self.sync_status == SyncStatus.PENDING
        for _attempt in range(20):
            needs_push = self._decide()
            values = {f.attname: f.pre_save(self, False) for f in fields}
            # One statement needs no transaction; with the outbox record, one transaction.
            with transaction.atomic(using=using, savepoint=False) if needs_push else nullcontext():
                if rows.filter(pk=self.pk, sync_version=self.sync_version).update(**values):
                    if needs_push:
                        signals.customer_changed.send(sender=Customer, customer=self, queued=queued)
                    post_save.send(
                        sender=cls, instance=self, created=False, update_fields=names, raw=False, using=using
                    )
                    return
            # A sync confirmed a newer state since this copy was loaded: diff against it.
            row = rows.filter(pk=self.pk).values_list("stripe_data", "sync_version").first()
            if row is None:
                raise DatabaseError("Save with update_fields did not affect any rows.")
            self.stripe_data, self.sync_version = row
        raise DatabaseError(f"Customer {self.pk}'s confirmed state kept changing while it was saved.")

    def _decide(self) -> bool:
        """Validate, diff and set the status: whether Stripe is owed something."""
        params = self.validate_for_stripe()  # computes the diff once, for the status too
        needs_push = self.needs_push(params)
        if self.sync_status != SyncStatus.DELETED:
            self.settle(needs_push)
        return needs_push

    def save_synced(self) -> None:
        """Write every column, outbox untouched: for the sync, under the row lock."""
        super().save()
