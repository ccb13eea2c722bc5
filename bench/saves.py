"""Benchmark what the app adds to a save, each figure a ratio against Django's own save measured
in the same run, interleaved (one with, one without, in turn, the order alternating each round)
so the machine's noise, and whatever one side or a reset leaves behind, hits both.

    python -m bench.saves [--rounds 400]

- 3a. an edit that changes a synced field, against ``Model.save`` of the same change (Django
  alone, no app); every timed edit is the customer's first since it was in sync, so it writes
  its outbox record;
  the next row, for comparison: the least the public API can do for the same guarantee, Django's
  save and an outbox record's ``create()`` in one ``transaction.atomic()``, against the same;
- 3c. a save that changes nothing syncable (an unchanged customer saved again), against the same;
- 3d. an owner's save that changes a mapped field (``OWNER_FIELDS``), the owner model having
  ``OwnerMixin``, against the same owner's save with the app taken out (its receivers
  disconnected, ``Model.save`` called past the mixin's ``save()``): the same model's save doing
  none of the app's work, i.e. a site without the app; every timed save writes its customer's
  outbox record, its first change since it was in sync (the records are deleted and the customer
  set in sync, untimed, before each save of either side). The owner is loaded from the database,
  as a view has it. The next rows, for comparison: the least the public API can do for the same
  guarantee (in one ``transaction.atomic()``: its customer read ``select_for_update()``, Django's
  save of the owner, of the customer's changed fields and an outbox record's ``create()``),
  against the same owner alone; the same save without what the mixin remembers (a site without
  ``OwnerMixin``).

Uses the test settings' PostgreSQL, in a database of its own (``CUSTOMERSYNC_BENCH_DB``, default
``customersync_bench_saves``), and prints the queries each save made. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext, override_settings, setup_databases, teardown_databases

    connection.settings_dict["TEST"]["NAME"] = os.environ.get("CUSTOMERSYNC_BENCH_DB", "customersync_bench_saves")
    old = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    try:
        # No publishing: the figures are the save's own cost (publishing runs after commit, in a thread).
        with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "PUSH_ON_SAVE": False}):
            rows = _figures(args.rounds, CaptureQueriesContext, connection)
    finally:
        teardown_databases(old, verbosity=0)
    print(
        f"Saves on {connection.vendor} ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}), "
        f"median of {args.rounds} interleaved rounds:"
    )
    print(f"{'figure':<58} {'with the app':>13} {'Django alone':>13} {'ratio':>6}  queries  target")
    for name, with_, without, queries, target in rows:
        print(
            f"{name:<58} {with_ * 1000:>10.3f} ms {without * 1000:>10.3f} ms {with_ / without:>6.2f}  "
            f"{queries:>7}  {target}"
        )
    return 0


def _interleaved(rounds: int, ours, theirs, reset=None) -> tuple[float, float]:
    """Medians of ``ours`` and ``theirs`` run in turn, each after ``reset`` (untimed), in alternating
    order: what a reset or one side leaves behind (the collector's garbage, the database's and the
    CPU's caches) falls on both sides alike. A function returning a number has timed itself."""
    mine, base = [], []
    for i in range(rounds):
        pair = ((ours, mine), (theirs, base))
        for fn, samples in pair if i % 2 == 0 else pair[::-1]:
            if reset is not None:
                reset()
            started = time.perf_counter()
            took = fn(i)
            samples.append(took if took is not None else time.perf_counter() - started)
    return statistics.median(mine[10:]), statistics.median(base[10:])  # the first rounds warm up


def _figures(rounds: int, capture, connection) -> list:
    from django.db import models, transaction
    from django.db.models.signals import post_save, pre_save

    from customersync.models import Customer, PendingPush, SyncStatus
    from customersync.owner import save
    from customersync.owner.customers import owner_post_save, owner_pre_save
    from customersync.pull.pages import PullStats, store_page
    from tests.owners import field, make_owner

    obj = {"id": "cus_BenchSaves", "object": "customer", "name": "Ann", "email": "ann@example.com", "created": 1}
    store_page([obj], PullStats())
    one = Customer.objects.get(stripe_id="cus_BenchSaves")

    def settled() -> None:  # untimed: the customer in sync again, nothing queued
        PendingPush.objects.all().delete()
        Customer.objects.filter(pk=one.pk).update(name="Ann", description="", sync_status=SyncStatus.IN_SYNC)
        one.name, one.description, one.sync_status = "Ann", "", SyncStatus.IN_SYNC

    def app_edit(i):
        one.name = f"Ann {i}"
        one.save()

    def django_edit(i):
        one.description = f"plain {i}"
        models.Model.save(one)

    def django_edit_and_record(i):
        one.description = f"plain {i}"
        with transaction.atomic():
            models.Model.save(one)
            PendingPush.objects.create(customer=one)

    def app_same(i):
        one.save()

    def django_same(i):
        models.Model.save(one)

    rows = []
    settled()
    with capture(connection) as queries:
        app_edit(0)
    edit = _interleaved(rounds, app_edit, django_edit, settled)
    rows.append(("3a. one save changing a synced field", *edit, len(queries), "<= 2"))
    settled()
    with capture(connection) as queries:
        django_edit_and_record(0)
    floor = _interleaved(rounds, django_edit_and_record, django_edit, settled)
    rows.append(("    Django's save and a record's create, one transaction", *floor, len(queries), "(comparison)"))
    settled()
    with capture(connection) as queries:
        app_same(0)
    same = _interleaved(rounds, app_same, django_same)
    rows.append(("3c. one save changing nothing syncable", *same, len(queries), "<= 1.2"))

    created = make_owner("Bench", **{field("email"): "billing@bench.test"})
    Customer.objects.filter(pk=one.pk).update(owner=created, owner_values={"email": "billing@bench.test"})
    model = type(created)
    owner = model.objects.get(pk=created.pk)
    email = field("email")

    def owner_with(i):
        setattr(owner, email, f"billing{i}@bench.test")
        owner.save()

    @contextlib.contextmanager
    def app_out():  # the app's receivers disconnected
        pre_save.disconnect(owner_pre_save, sender=model, dispatch_uid="customersync.owner_pre_save")
        post_save.disconnect(owner_post_save, sender=model, dispatch_uid="customersync.owner_post_save")
        try:
            yield
        finally:
            pre_save.connect(owner_pre_save, sender=model, dispatch_uid="customersync.owner_pre_save")
            post_save.connect(owner_post_save, sender=model, dispatch_uid="customersync.owner_post_save")

    def owner_without(i):
        with app_out():
            setattr(owner, email, f"plain{i}@bench.test")
            started = time.perf_counter()
            models.Model.save(owner)  # passing over OwnerMixin.save too: nothing of the app's
            return time.perf_counter() - started

    def owner_floor(i):
        with app_out():
            value = f"floor{i}@bench.test"
            setattr(owner, email, value)
            started = time.perf_counter()
            with transaction.atomic():
                (customer,) = Customer.objects.select_for_update().filter(owner_id=owner.pk).order_by()
                models.Model.save(owner)
                customer.email, customer.owner_values, customer.sync_status = value, {"email": value}, "pending"
                models.Model.save(customer, update_fields=["email", "owner_values", "sync_status", "updated_at"])
                PendingPush.objects.create(customer=customer)
            return time.perf_counter() - started

    def unqueued() -> None:  # untimed: the customer in sync again, nothing queued: the timed save writes a record
        PendingPush.objects.all()._raw_delete(PendingPush.objects.db)
        Customer.objects.filter(pk=one.pk).update(sync_status=SyncStatus.IN_SYNC)

    def owner_rounds(name: str, target: str) -> None:
        owner_with(-1)
        unqueued()
        with capture(connection) as queries:
            owner_with(0)
        rows.append((name, *_interleaved(rounds, owner_with, owner_without, unqueued), len(queries), target))

    owner_rounds("3d. owner save changing a mapped field (vs the owner alone)", "<= 2")
    unqueued()
    with capture(connection) as queries:
        owner_floor(0)
    floor = _interleaved(rounds, owner_floor, owner_without, unqueued)
    rows.append(("    the same statements through Django's own saves", *floor, len(queries), "(comparison)"))
    remembers = save._remembers
    save._remembers = lambda instance: None  # nothing remembered, as without OwnerMixin
    try:
        owner_rounds("    the same without OwnerMixin", "(comparison)")
    finally:
        save._remembers = remembers
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
