"""``python -m customersync.testing``: run the fake Stripe server in the foreground.

Prints ``fake-stripe: listening on <url>`` once it is bound, then one line per
API request (method, path, status, the account it acted on, raw body) unless
``--quiet``. ``--platform`` and ``--connected`` register Stripe accounts
(see ``accounts``), ``--seed-account`` seeds one.

``--forward-to URL`` sends each event of a change made through the control API
(``POST /_fake/events``) to the site's webhook URL, signed with
``--webhook-secret`` (default: the ``STRIPE_WEBHOOK_SECRET`` environment
variable), as ``stripe listen --forward-to`` does; it prints one line per
delivery (``fake-stripe: --> customer.updated evt_... URL 200``) unless ``--quiet``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from .events import Delivery, check_url
from .handler import RecordedRequest, is_loopback_host
from .server import FakeStripeServer


def _print_request(record: RecordedRequest) -> None:
    query = record.query and "?" + "&".join(f"{k}={v}" for k, v in record.query.items())
    status = record.status if record.status is not None else "dropped"
    # Keep one line per request even if a body holds newlines.
    body = record.body.decode("utf-8", "backslashreplace").replace("\r", "\\r").replace("\n", "\\n")
    line = f"fake-stripe: {record.method} {record.path}{query or ''} {status}"
    line += f" [{record.account}]" if record.account else ""
    print(f"{line} {body}" if body else line, flush=True)


def _print_delivery(delivery: Delivery) -> None:
    outcome = delivery.status if delivery.status is not None else f"failed: {delivery.error}"
    print(f"fake-stripe: --> {delivery.type} {delivery.event_id} {delivery.url} {outcome}", flush=True)


def _webhook_url(text: str) -> str:
    """A URL to forward to; ``localhost:8000/stripe/webhook/`` means ``http://`` that, as ``stripe listen`` takes it."""
    try:
        return check_url(text if "://" in text else f"http://{text}")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fault(text: str) -> tuple[int, int]:
    status, _, times = text.partition("x")
    if not status.isdigit() or not 400 <= int(status) <= 599 or (times and not times.isdigit()):
        raise argparse.ArgumentTypeError(f"expected STATUS[xN] with a 4xx or 5xx STATUS, e.g. 400 or 500x2: {text!r}")
    return int(status), int(times or 1)


def _assignment(text: str) -> tuple[str, list[str]]:
    """``NAME=A,B,...`` as ``(NAME, [A, B, ...])``."""
    name, _, values = text.partition("=")
    items = [item.strip() for item in values.split(",") if item.strip()]
    if not name.strip() or not items:
        raise argparse.ArgumentTypeError(f"expected ACCOUNT=VALUE[,VALUE...]: {text!r}")
    return name.strip(), items


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m customersync.testing",
        description="Run a fake Stripe customers API on a loopback address, for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=12111, help="port to bind, 0 for any (default 12111)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="start with N plausible customers")
    parser.add_argument("--api-key", help="accept only this key (default: any sk_test_ key)")
    parser.add_argument("--quiet", action="store_true", help="do not print a line per request")
    accounts = parser.add_argument_group("accounts")
    accounts.add_argument(
        "--platform",
        action="append",
        default=[],
        type=_assignment,
        metavar="ACCT=KEY[,KEY...]",
        help="register a platform account and its API keys (then only platforms' keys are accepted); repeatable",
    )
    accounts.add_argument(
        "--connected",
        action="append",
        default=[],
        type=_assignment,
        metavar="PLATFORM=ACCT[,ACCT...]",
        help="connect accounts to a platform given with --platform; repeatable",
    )
    accounts.add_argument(
        "--seed-account",
        action="append",
        default=[],
        type=_assignment,
        metavar="ACCT=N",
        help="start that account with N plausible customers; repeatable",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_fault,
        metavar="STATUS[xN]",
        help="answer the next N (default 1) customer updates or creates with STATUS and a Stripe error, "
        "e.g. 400 (a refusal) or 500x2 (retried, then let through); repeat for several",
    )
    webhooks = parser.add_argument_group("webhooks")
    webhooks.add_argument(
        "--forward-to",
        type=_webhook_url,
        metavar="URL",
        help="send each event of a change made through POST /_fake/events to this webhook URL, signed, "
        "as stripe listen --forward-to does (e.g. http://127.0.0.1:8000/stripe/webhook/)",
    )
    webhooks.add_argument(
        "--webhook-secret",
        metavar="SECRET",
        help="the site's webhook signing secret to sign with (default: $STRIPE_WEBHOOK_SECRET)",
    )
    args = parser.parse_args(argv)

    if args.api_key and args.platform:
        parser.error("--api-key has no effect with --platform: the platforms' keys are the ones accepted")
    webhook_secret = args.webhook_secret or os.environ.get("STRIPE_WEBHOOK_SECRET")
    if args.webhook_secret and not args.forward_to:
        parser.error("--webhook-secret has no effect without --forward-to")
    if args.forward_to and not webhook_secret:
        parser.error("--forward-to needs the site's webhook signing secret: --webhook-secret or STRIPE_WEBHOOK_SECRET")
    if not is_loopback_host(args.host):
        # A fake that accepts any test key has no business on a reachable interface.
        parser.error(
            f"refusing to listen on {args.host!r}: this is a test server and binds only "
            "loopback addresses (127.0.0.0/8, ::1 or localhost)"
        )
    try:
        server = FakeStripeServer(
            args.host,
            args.port,
            args.api_key,
            on_request=None if args.quiet else _print_request,
            on_delivery=None if args.quiet else _print_delivery,
        )
    except OSError as exc:
        print(f"fake-stripe: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        for account, keys in args.platform:
            server.add_platform(account, keys)
        for platform, connected in args.connected:
            for account in connected:
                server.add_connected_account(platform, account)
        for account, (count, *_) in args.seed_account:
            if not count.isdigit():
                raise ValueError(f"--seed-account {account}={count}: N must be a whole number")
            server.seed(int(count), account=account)
    except (KeyError, ValueError) as exc:
        server.stop()
        parser.error(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    if args.seed:
        server.seed(args.seed)
    for status, times in args.fault:
        server.inject(status=status, times=times, method="POST", path_prefix="/v1/customers")
    if args.forward_to:
        server.forward_to(args.forward_to, webhook_secret or ())
    # SIGTERM (e.g. from a test harness) stops as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    print(f"fake-stripe: listening on {server.url}", flush=True)
    if args.forward_to:
        print(f"fake-stripe: forwarding events to {args.forward_to}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
