from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from customersync import accounts
from customersync.exceptions import ConfigurationError
from customersync.owner import linking as link

LISTED = {
    link.AMBIGUOUS: "ambiguous",
    link.TAKEN: "customer linked to another owner",
    link.NO_MATCH: "no match",
}


class Command(BaseCommand):
    help = (
        "Link owners (CUSTOMERSYNC['OWNER_MODEL']) to customers already mirrored here (customersync_pull), "
        "matched on one key: --field NAME (an owner column holding the Stripe customer id), --email (the owner's "
        "mapped email, case-insensitive) or --metadata KEY (the customer's metadata[KEY] holds the owner's pk). "
        "Ambiguous matches and owners without a match are listed, never guessed; owners already linked are "
        "skipped; -v 2 lists the owners linked too. Nothing is sent to Stripe: later owner saves send what "
        "changes after the link."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("owner_pks", nargs="*", metavar="OWNER_PK", help="Link only these owners.")
        parser.add_argument("--field", metavar="NAME", help="An owner field holding the Stripe customer id.")
        parser.add_argument("--email", action="store_true", help="Match the owner's mapped email (OWNER_FIELDS).")
        parser.add_argument(
            "--metadata",
            metavar="KEY",
            help="Match customers whose metadata[KEY] is the owner's pk (customersync_owner: the owner's identity).",
        )
        parser.add_argument(
            "--account",
            default=None,
            help="Link customers of this Stripe account: PLATFORM or PLATFORM/acct_... "
            "(default: the default platform's own).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Report what would be linked; write nothing.")
        parser.add_argument(
            "--batch-size", type=int, default=link.BATCH_SIZE, help=f"Owners per batch (default {link.BATCH_SIZE})."
        )

    def handle(self, *args: Any, owner_pks: list[str], **options: Any) -> None:
        verbosity = options["verbosity"]

        def report(outcome: link.Outcome) -> None:
            line = f"owner {outcome.owner_pk} {outcome.owner!r}: "
            if outcome.kind == link.LINKED:
                if verbosity >= 2:
                    done = "would be linked to" if options["dry_run"] else "linked to"
                    self.stdout.write(line + f"{done} {outcome.stripe_ids[0]} ({outcome.reason})")
            elif verbosity >= 1:
                self.stdout.write(self.style.WARNING(line + f"{LISTED[outcome.kind]}: {outcome.reason}"))

        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            found = link.require_mapping()
            match = link.matcher(found, field=options["field"], email=options["email"], metadata=options["metadata"])
            # clean(): the pk's type and its validators (a string pk's length), whatever its field.
            pks = [found.model._meta.pk.clean(pk, None) for pk in owner_pks]
        except ValidationError as err:
            raise CommandError(f"Not an owner pk: {'; '.join(err.messages)}") from err
        except (ConfigurationError, ValueError) as err:
            raise CommandError(str(err)) from err
        try:
            account = accounts.resolve(options["account"])
        except ConfigurationError as err:
            raise CommandError(f"--account: {err}") from None
        result = link.link_owners(
            match,
            owner_pks=pks or None,
            dry_run=options["dry_run"],
            batch_size=options["batch_size"],
            report=report,
            account=account,
        )
        counts = result.counts
        summary = (
            f"Linked {counts[link.LINKED]}, already linked {counts[link.ALREADY_LINKED]}, "
            f"ambiguous {counts[link.AMBIGUOUS]}, customer linked to another owner {counts[link.TAKEN]}, "
            f"no match {counts[link.NO_MATCH]}"
        )
        summary += " (dry run: nothing written)." if result.dry_run else "."
        self.stdout.write(self.style.SUCCESS(summary))
