"""The sync's records: the outbox, the sync log, the lease, conflicts, webhook events, the pull cursor."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils.translation import gettext_lazy as _

from ..stripe.client import IDEMPOTENCY_PREFIX
from .customer import Customer


class PushState(models.TextChoices):
    PENDING = "pending", _("Pending")
    SENDING = "sending", _("Sending")
    SENT = "sent", _("Sent")
    NOTHING = "nothing", _("Nothing to send")
    SUPERSEDED = "superseded", _("Joined a later push")
    FAILED = "failed", _("Failed")


class PendingPushQuerySet(models.QuerySet):
    def queued(self) -> PendingPushQuerySet:
        """Pushes queued and not yet taken by a worker (one per customer at most: the constraint below)."""
        return self.filter(state=PushState.PENDING)

    def for_idempotency_key(self, key: str) -> PendingPushQuerySet:
        """The record whose pushes were sent under ``key`` (none for a key not of this app)."""
        if not key.startswith(IDEMPOTENCY_PREFIX):
            return self.none()
        try:
            record_key = uuid.UUID(key.removeprefix(IDEMPOTENCY_PREFIX))
        except ValueError:
            return self.none()
        return self.filter(key=record_key)


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

    objects = PendingPushQuerySet.as_manager()

    class Meta:
        verbose_name = _("pending push")
        verbose_name_plural = _("pending pushes")
        indexes = [models.Index(fields=["state", "enqueued_at"], name="customersync_push_sweep")]
        constraints = [
            # At most one queued push per customer: later edits join it.
            models.UniqueConstraint(
                fields=["customer"], condition=models.Q(state="pending"), name="customersync_one_queued_push"
            )
        ]

    def __str__(self) -> str:
        return f"push #{self.pk} of {self.customer_id} ({self.state})"

    @property
    def idempotency_key(self) -> str:
        return f"{IDEMPOTENCY_PREFIX}{self.key}"


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
        indexes = [models.Index(fields=["started_at"], name="customersync_attempt_started")]

    def __str__(self) -> str:
        return f"attempt #{self.pk} of {self.customer_id}: {self.outcome}"


class PushLease(models.Model):
    """Who may send requests for a customer right now: at most one holder.

    Taken with a conditional UPDATE (works on every database), renewed by
    every write its holder makes (freeze, attempt, confirm: each conditional
    on still holding it) and right before each request, released after. A
    holder that died without releasing is replaced once the lease expires, or
    when it was a process on this host that no longer exists, once its last
    request's deadline has passed.
    """

    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, primary_key=True, related_name="+")
    owner = models.CharField(max_length=255, blank=True)
    # All on the database's clock, never a worker's.
    expires_at = models.DateTimeField(null=True, blank=True)
    renewed_at = models.DateTimeField(null=True, blank=True)
    # When a holder last took it from another that expired or died (by the take's own UPDATE).
    taken_over_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["taken_over_at"], name="customersync_lease_takeover")]


class Resolution(models.TextChoices):
    LOCAL_WINS = "local_wins", _("Local edit kept (pushed over Stripe's value)")
    REMOTE_WINS = "remote_wins", _("Stripe's value taken (local edit dropped)")
    # A both-ways value the owner's field cannot hold: the customer has it, the owner keeps its own.
    NOT_WRITTEN = "not_written", _("Owner kept its value (its field cannot hold Stripe's)")


class Conflict(models.Model):
    """Stripe changed a field that an operator had also changed here and not yet pushed; or
    Stripe's value of a both-ways field does not fit the owner's field, which keeps its own
    (``local_value``: the owner's value as last applied)."""

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
        indexes = [models.Index(fields=["detected_at"], name="customersync_conflict_detected")]

    def __str__(self) -> str:
        return f"{self.param} of {self.customer_id}: {self.resolution}"


class EventOutcome(models.TextChoices):
    RECEIVED = "received", _("Received (being applied)")
    APPLIED = "applied", _("Applied")
    DUPLICATE = "duplicate", _("Duplicate (already received)")
    STALE = "stale", _("Stale (older than the mirror's state)")
    IGNORED = "ignored", _("Ignored")
    REFUSED = "refused", _("Refused")


class WebhookEvent(models.Model):
    """A signed Stripe event a webhook endpoint received: one row per delivery, with the account it
    belongs to and what was done with it.

    An event is handled once per platform: its id is claimed by the first delivery to one of the
    platform's endpoints (the row whose outcome is not duplicate or refused), and a later delivery
    of the same id to that platform is recorded as a duplicate. The same event delivered to
    another platform's Connect endpoint (a connected account connected to both) is that
    platform's own, and handled there too (see docs/topics/webhooks.md).
    """

    event_id = models.CharField(_("event id"), max_length=255, db_index=True)
    # The platform whose endpoint received it, and the account the event belongs to: the
    # connected account's acct_... (its "account"), or "" for the platform's own account.
    platform = models.CharField(_("platform"), max_length=64, default="default")
    stripe_account = models.CharField(_("connected account"), max_length=255, blank=True)
    type = models.CharField(_("type"), max_length=64)
    stripe_id = models.CharField(_("customer"), max_length=255, blank=True, db_index=True)
    created = models.DateTimeField(_("created in Stripe"))
    received_at = models.DateTimeField(_("received"), auto_now_add=True)
    outcome = models.CharField(_("outcome"), max_length=32, choices=EventOutcome.choices)
    # What the outcome does not say: created, deleted, an echo of this app's push, why it was refused.
    detail = models.CharField(_("detail"), max_length=255, blank=True)
    idempotency_key = models.CharField(_("request idempotency key"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("webhook event")
        verbose_name_plural = _("webhook events")
        ordering = ("-received_at", "-id")
        indexes = [models.Index(fields=["received_at"], name="customersync_event_received")]
        constraints = [
            # A duplicate or refused delivery claims nothing: the next one is handled as new.
            models.UniqueConstraint(
                fields=["platform", "event_id"],
                condition=~models.Q(outcome__in=["duplicate", "refused"]),
                name="customersync_event_once_per_platform",
            )
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}: {self.outcome}"


class PullCursor(models.Model):
    """Where an interrupted ``customersync_pull`` resumes."""

    name = models.CharField(max_length=64, primary_key=True)
    starting_after = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField()
    complete_walk = models.BooleanField(default=False)
    pulled = models.PositiveIntegerField(default=0)


class EventCursor(models.Model):
    """Where an account's catch-up stands in Stripe's events log, and its last reconcile's figures.

    ``event_id`` and ``event_created``: the last customer event applied, or deliberately skipped,
    by ``customersync.catch_up``; the next run lists the events after it. ``key``: ``"default"``
    for the default platform's own account, else the account's pk. ``behind``: why the events
    log could not reach the cursor (older than Stripe keeps events), set until a reconcile
    of the account completes. The reconcile's walk resumes from ``reconcile_after`` and
    stamps each customer it meets (``last_pulled_at``) after ``reconcile_started_at``.
    """

    key = models.CharField(max_length=64, primary_key=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    # A run (catch-up or reconcile) of this account holds the cursor until then; renewed each page.
    running_until = models.DateTimeField(null=True, blank=True, editable=False)
    account = models.OneToOneField(
        "customersync.Account",
        verbose_name=_("Stripe account"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    event_id = models.CharField(_("last event"), max_length=255, blank=True)
    event_created = models.DateTimeField(_("last event created"), null=True, blank=True)
    caught_up_at = models.DateTimeField(_("last caught up"), null=True, blank=True)
    applied = models.PositiveBigIntegerField(_("events applied"), default=0)
    behind = models.TextField(_("events log out of reach"), blank=True)
    behind_at = models.DateTimeField(_("found out of reach"), null=True, blank=True)
    reconcile_started_at = models.DateTimeField(_("reconcile started"), null=True, blank=True)
    reconcile_after = models.CharField(_("reconcile resumes after"), max_length=255, blank=True)
    reconcile_finished_at = models.DateTimeField(_("last reconcile finished"), null=True, blank=True)
    seen = models.PositiveIntegerField(_("seen"), default=0)
    drifted = models.PositiveIntegerField(_("drifted"), default=0)
    deleted = models.PositiveIntegerField(_("deleted"), default=0)
    added = models.PositiveIntegerField(_("added"), default=0)

    class Meta:
        verbose_name = _("events cursor")
        verbose_name_plural = _("events cursors")
        ordering = ("key",)

    def __str__(self) -> str:
        return f"{self.account or 'default'}: {self.event_id or 'no event yet'}"


class Drift(models.Model):
    """A field a reconcile found differing from Stripe with no local change pending: set to Stripe's value."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="drift")
    found_at = models.DateTimeField(_("found"), auto_now_add=True)
    param = models.CharField(_("parameter"), max_length=255)
    mirror_value = models.JSONField(_("value in the mirror"), null=True, blank=True)
    stripe_value = models.JSONField(_("value in Stripe"), null=True, blank=True)

    class Meta:
        verbose_name = _("drift")
        verbose_name_plural = _("drift")
        ordering = ("-found_at", "-id")

    def __str__(self) -> str:
        return f"{self.param} of {self.customer_id}"
