"""Owners linked to customers already mirrored (``manage.py customersync_link``): matched, never guessed.

A site adopting the app has owners and, after ``customersync_pull``, their
customers, but nothing joining the two. Each owner is matched on one key:

- ``field``: an owner column that holds the Stripe customer id;
- ``email``: the owner's value for the mapped ``email`` parameter, against
  the customer's email (trimmed, case-insensitive);
- ``metadata``: the customer's ``metadata[KEY]``, which holds the owner's pk
  (or, for ``customersync_owner``, its identity ``"app_label.model:pk"``).

Only an owner with exactly one candidate customer, which no other unlinked
owner matches and no other owner has, is linked; the rest is reported.
Customers deleted in Stripe or not yet created there are never candidates.
Linking writes ``owner`` and ``owner_values`` (the owner's mapped values, as
if just applied) with one UPDATE per batch: no signal, no outbox record, no
request. Later owner saves send only what changes after the link.

Owners are read in batches (keyset on the pk); each batch costs a fixed
number of queries. Keys several owners can share (a column, an email) are
first counted over every unlinked owner, one read per batch, so an owner
whose key another owner has too is reported in every batch, not linked in the
first one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import IntegrityError, models, transaction
from django.db.models import Exists, F, OuterRef
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Lower, Trim
from django.utils import timezone

from ..accounts import resolve
from ..exceptions import ConfigurationError
from ..models import Customer, SyncStatus
from .mapping import OWNER_METADATA_KEY, Mapping, mapping

BATCH_SIZE = 500

LINKED = "linked"
ALREADY_LINKED = "already_linked"
AMBIGUOUS = "ambiguous"
TAKEN = "taken"  # the one candidate is linked to another owner
NO_MATCH = "no_match"


@dataclass(frozen=True)
class Matcher:
    """One way to match: the owner's key, and the customer expression it is compared with."""

    label: str  # how the key is named in reports: "email", "stripe_customer_id", "metadata['org_id']"
    key: Callable[[Any], str]  # the owner's key; '' when it has none
    customer_key: Any  # an expression over Customer, compared with the owners' keys
    shared: bool  # several owners can have the same key, so keys are counted first
    columns: tuple[str, ...] | None  # the owner columns ``key`` reads (None: it may read anything)


@dataclass(frozen=True)
class Outcome:
    """What happened to one owner (only owners that were not already linked are reported)."""

    kind: str
    owner_pk: Any
    owner: str
    stripe_ids: tuple[str, ...]
    reason: str


@dataclass
class LinkResult:
    counts: Counter[str] = field(default_factory=Counter)
    dry_run: bool = False

    @property
    def linked(self) -> int:
        return self.counts[LINKED]


def matcher(found: Mapping, *, field: str | None = None, email: bool = False, metadata: str | None = None) -> Matcher:
    """The matcher for exactly one of ``field``, ``email``, ``metadata``; ``ValueError`` for anything else."""
    given = [name for name, value in (("--field", field), ("--email", email), ("--metadata", metadata)) if value]
    if len(given) != 1:
        got = f" (got {' and '.join(given)})" if given else ""
        raise ValueError(f"Choose one way to match owners to customers: --field NAME, --email or --metadata KEY{got}.")
    if field:
        return _by_column(found, field)
    if email:
        return _by_email(found)
    return _by_metadata(found, str(metadata))


def _by_column(found: Mapping, name: str) -> Matcher:
    model = found.model
    try:
        column = model._meta.get_field(name)
    except FieldDoesNotExist:
        column = None
    if column is None or not column.concrete or column.many_to_many:
        names = ", ".join(f.name for f in model._meta.concrete_fields)
        raise ValueError(
            f"--field {name}: {model._meta.label} (CUSTOMERSYNC['OWNER_MODEL']) has no such field. Its fields: {names}."
        )
    attname = column.attname

    def key(owner: Any) -> str:
        value = getattr(owner, attname)
        return "" if value is None else str(value).strip()

    return Matcher(name, key, F("stripe_id"), shared=True, columns=(attname,))


def _by_email(found: Mapping) -> Matcher:
    source = next((s for s in found.sources if s.key == "email"), None)
    if source is None:
        raise ValueError(
            "--email: CUSTOMERSYNC['OWNER_FIELDS'] maps no 'email': map it to the owner's email "
            '(e.g. "email": "billing_email"), or match with --field or --metadata.'
        )

    def key(owner: Any) -> str:
        return str(source.read(owner) or "").strip().lower()

    columns = (source.field,) if source.field else None
    return Matcher("email", key, Lower(Trim("email")), shared=True, columns=columns)


def _by_metadata(found: Mapping, name: str) -> Matcher:
    if "[" in name or "]" in name or not name.strip():
        raise ValueError(f"--metadata {name!r}: give the metadata key alone, e.g. --metadata org_id.")
    if name == OWNER_METADATA_KEY:
        key: Callable[[Any], str] = lambda owner: found.identity(owner.pk)  # noqa: E731
    else:
        key = lambda owner: str(owner.pk)  # noqa: E731
    # The key's text, compared as text: a key transform's own ``__in`` reads the values as JSON
    # on SQLite (where "1" is the number 1 and a customer id is no JSON at all).
    text = Cast(KeyTextTransform(name, "metadata"), output_field=models.TextField())
    # Derived from the pk: no two owners have the same key.
    return Matcher(f"metadata[{name!r}]", key, text, shared=False, columns=("pk",))


def require_mapping() -> Mapping:
    found = mapping()
    if found is None:
        raise ConfigurationError(
            "CUSTOMERSYNC['OWNER_MODEL'] is not set: name the model that owns customers "
            '(e.g. "accounts.Organization") and migrate before linking owners to customers.'
        )
    return found


def link_owners(
    match: Matcher,
    *,
    owner_pks: list[Any] | None = None,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    report: Callable[[Outcome], None] | None = None,
    account: Any = None,
) -> LinkResult:
    """Link the owners (all, or ``owner_pks``) that ``match`` pairs with exactly one customer.

    ``report`` is called for every owner that was not already linked
    (linked, ambiguous, taken, no match). ``dry_run``: decide, write nothing.
    ``account``: link customers of that account (default: the default platform's own account);
    an owner has at most one customer in each.
    """
    account = resolve(account)
    found = require_mapping()
    if batch_size < 1:
        raise ValueError("The batch size must be at least 1.")
    owners = found.model._default_manager.all()
    linked_here = Exists(Customer.objects.filter(owner_id=OuterRef("pk"), account=account))
    shared = _shared_keys(match, owners.filter(~linked_here), batch_size) if match.shared else {}
    selected = owners.filter(pk__in=owner_pks) if owner_pks is not None else owners
    result = LinkResult(dry_run=dry_run)
    for batch in _batches(selected.annotate(customersync_linked=linked_here), batch_size):
        for attempt in range(3):
            try:
                outcomes = _link_batch(found, match, batch, shared, dry_run, account)
                break
            except IntegrityError:
                # An owner got a customer meanwhile (the batch was rolled back): decide again.
                if attempt == 2:
                    raise
                batch = list(selected.annotate(customersync_linked=linked_here).filter(pk__in=[o.pk for o in batch]))
        for outcome in outcomes:
            result.counts[outcome.kind] += 1
            if report is not None and outcome.kind != ALREADY_LINKED:
                report(outcome)
    return result


def _batches(queryset: models.QuerySet[Any], size: int) -> Iterator[list[Any]]:
    """The queryset's rows by pk, ``size`` at a time: one query each, however far in."""
    last: Any = None
    while True:
        page = queryset.order_by("pk") if last is None else queryset.filter(pk__gt=last).order_by("pk")
        rows = list(page[:size])
        if rows:
            yield rows
        if len(rows) < size:
            return
        last = rows[-1].pk


def _shared_keys(match: Matcher, unlinked: models.QuerySet[Any], size: int) -> dict[str, int]:
    """Keys more than one unlinked owner has, with how many have each."""
    if match.columns is not None:
        unlinked = unlinked.only(*match.columns)
    counts: Counter[str] = Counter()
    for batch in _batches(unlinked, size):
        counts.update(k for k in map(match.key, batch) if k)
    return {k: n for k, n in counts.items() if n > 1}


@dataclass(frozen=True)
class _Candidate:
    pk: int
    stripe_id: str
    owner_id: Any


def _candidates(match: Matcher, keys: set[str], lock: bool, account: Any) -> dict[str, list[_Candidate]]:
    """The account's mirrored customers whose key is one of ``keys``, grouped by it (locked when ``lock``)."""
    queryset = (
        Customer.objects.filter(account=account)
        .exclude(stripe_id=None)
        .exclude(stripe_id="")
        .exclude(sync_status=SyncStatus.DELETED)
        .annotate(customersync_key=match.customer_key)
        .filter(customersync_key__in=sorted(keys))
        .order_by("stripe_id")
    )
    if lock:
        queryset = queryset.select_for_update(of=("self",))
    grouped: dict[str, list[_Candidate]] = {}
    for pk, stripe_id, owner_id, key in queryset.values_list("pk", "stripe_id", "owner_id", "customersync_key"):
        grouped.setdefault(key, []).append(_Candidate(pk, stripe_id, owner_id))
    return grouped


def _link_batch(
    found: Mapping, match: Matcher, batch: list[Any], shared: dict[str, int], dry_run: bool, account: Any
) -> list[Outcome]:
    with transaction.atomic():
        keys = {owner.pk: match.key(owner) for owner in batch if not owner.customersync_linked}
        wanted = {k for k in keys.values() if k}
        candidates = _candidates(match, wanted, lock=not dry_run, account=account) if keys else {}
        outcomes: list[Outcome] = []
        links: list[Customer] = []
        now = timezone.now()
        for owner in batch:
            if owner.customersync_linked:
                outcomes.append(Outcome(ALREADY_LINKED, owner.pk, "", (), ""))
                continue
            kind, chosen, reason = _decide(match, keys[owner.pk], candidates, shared)
            ids = tuple(c.stripe_id for c in chosen)
            if kind == LINKED:
                # Claimed for this owner: no later owner of the batch can take it too.
                candidates[keys[owner.pk]] = [_Candidate(chosen[0].pk, chosen[0].stripe_id, owner.pk)]
                links.append(
                    Customer(pk=chosen[0].pk, owner_id=owner.pk, owner_values=found.values(owner), updated_at=now)
                )
            outcomes.append(Outcome(kind, owner.pk, str(owner), ids, reason))
        if links and not dry_run:
            # Guarded by ``owner IS NULL`` on top of the row locks; the unique
            # constraint on owner refuses an owner that got a customer meanwhile.
            written = Customer.objects.filter(owner__isnull=True).bulk_update(
                links, ["owner", "owner_values", "updated_at"]
            )
            if written != len(links):
                raise IntegrityError("A customer of the batch was linked by another process meanwhile.")
    return outcomes


def _decide(
    match: Matcher, key: str, candidates: dict[str, list[_Candidate]], shared: dict[str, int]
) -> tuple[str, list[_Candidate], str]:
    if not key:
        return NO_MATCH, [], f"no {match.label}"
    found = candidates.get(key, [])
    said = f"{match.label} {key!r}"
    if not found:
        return NO_MATCH, [], f"no customer with {said}"
    if len(found) == 1 and found[0].owner_id is not None:
        return TAKEN, found, f"{found[0].stripe_id} ({said}) is linked to owner {found[0].owner_id}, not relinked"
    if len(found) > 1:
        return AMBIGUOUS, found, f"{said} matches {len(found)} customers: {', '.join(c.stripe_id for c in found)}"
    if shared.get(key, 0) > 1:
        return AMBIGUOUS, found, f"{found[0].stripe_id} ({said}) matches {shared[key]} owners"
    return LINKED, found, f"{said}"
