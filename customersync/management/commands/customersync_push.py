from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import ngettext

from customersync import accounts, sync
from customersync.exceptions import ConfigurationError
from customersync.management import stripe_errors
from customersync.models import Customer, SyncStatus


class Command(BaseCommand):
    help = (
        "Push pending changes to Stripe now, in this process, and report each customer's outcome. "
        "Without ids: every pending or failed customer (of the --account given, else of every account)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "stripe_ids",
            nargs="*",
            metavar="STRIPE_ID",
            help="Push only these customers (Stripe ids, cus_...). Without any: every pending or failed customer.",
        )
        parser.add_argument(
            "--account",
            default=None,
            help="The Stripe account whose customers are pushed: PLATFORM or PLATFORM/acct_...; the STRIPE_IDs "
            "are looked up there, and without ids only its pending or failed customers are pushed. "
            "Default: STRIPE_IDs in the default platform's own account; without ids, every account's customers.",
        )

    def handle(self, *args: Any, stripe_ids: list[str], **options: Any) -> None:
        try:
            account = accounts.resolve(options["account"])
        except ConfigurationError as err:
            raise CommandError(f"--account: {err}") from None
        if stripe_ids:
            found = dict(
                Customer.objects.filter(account=account, stripe_id__in=stripe_ids).values_list("stripe_id", "pk")
            )
            missing = [sid for sid in stripe_ids if sid not in found]
            if missing:
                raise CommandError(f"No local customer with Stripe id: {', '.join(missing)}")
            pks = [found[sid] for sid in stripe_ids]
        else:
            owed = Customer.objects.filter(sync_status__in=[SyncStatus.PENDING, SyncStatus.FAILED])
            if options["account"] is not None:
                owed = owed.filter(account=account)  # the whole run is the account's, not only its ids
            pks = list(owed.order_by("pk").values_list("pk", flat=True))
        failures = 0
        steps: dict[str, None] = {}  # what to do about the failures, each said once
        for pk in pks:
            # A customer not created in Stripe yet has no id: named by its pk.
            stripe_id = Customer.objects.filter(pk=pk).values_list("stripe_id", flat=True).first() or f"customer {pk}"
            try:
                result = sync.push(pk)
            except sync.Busy:
                self.stdout.write(f"{stripe_id}: busy (a worker is pushing it now)")
                continue
            except sync.RetryLater as later:
                failures += 1
                steps[stripe_errors.next_step(later.error, one_customer=True, rate="RATE_LIMIT")] = None
                self.stdout.write(
                    self.style.ERROR(
                        stripe_errors.sentence(
                            f"{stripe_id}: not sent, it stays queued and is retried: "
                            + stripe_errors.describe(later.error)
                        )
                    )
                )
                continue
            line = f"{stripe_id}: {result.outcome.value}"
            if result.params:
                line += f" [{sync.loggable(result.params)}]"
            if result.error:
                failures += 1
                steps[stripe_errors.next_step(result.error, one_customer=True, rate="RATE_LIMIT")] = None
                self.stdout.write(
                    self.style.ERROR(stripe_errors.sentence(f"{line}: {stripe_errors.describe(result.error)}"))
                )
            else:
                self.stdout.write(line)
        count = len(pks)
        if failures:
            failed = ngettext(
                "%(failures)d of %(count)d customer failed", "%(failures)d of %(count)d customers failed", count
            ) % {"failures": failures, "count": count}
            raise CommandError(stripe_errors.sentence(failed, *steps))
        processed = ngettext("%(count)d customer processed.", "%(count)d customers processed.", count)
        self.stdout.write(self.style.SUCCESS(processed % {"count": count}))
