"""The API's routes: what each ``/v1`` request does to the customer store.

Beside the customer endpoints it answers just enough of the account and of
customers' related lists for clients that look them up.
"""

from __future__ import annotations

import copy
import re
from typing import Any
from urllib.parse import unquote

from .errors import FakeStripeAPIError
from .messages import RecordedRequest, _error_response, _json_bytes, _Response
from .store import _CustomerStore

_CUSTOMER_PATH = re.compile(r"/v1/customers/([^/]+)")
_RELATED_PATH = re.compile(r"/v1/customers/([^/]+)/(sources|tax_ids|cash_balance_transactions|balance_transactions)")

_ACCOUNT: dict[str, Any] = {
    "id": "acct_fakestripe000000",
    "object": "account",
    "type": "standard",
    "country": "US",
    "default_currency": "usd",
    "email": "account@example.com",
    "charges_enabled": True,
    "payouts_enabled": True,
    "details_submitted": True,
    "created": 1_600_000_000,
    "business_profile": {"name": "Fake Stripe account", "url": None, "support_email": None},
    "settings": {"branding": {"icon": None, "logo": None}, "dashboard": {"display_name": "Fake"}},
    "metadata": {},
}


def _route(store: _CustomerStore, record: RecordedRequest, *, livemode: bool = False) -> _Response:
    """Answer an authenticated API request with valid params (errors as Stripe-shaped responses).

    ``store`` is the customers of the account the request acts on, and
    ``livemode`` the mode of its key (what a customer it creates says).
    """
    method, path, params = record.method, record.path, record.params
    match = _CUSTOMER_PATH.fullmatch(path)
    try:
        if path == "/v1/customers" and method == "GET":
            payload = store.list_page(params)
        elif path == "/v1/customers/search" and method == "GET":
            payload = store.search(params)
        elif path == "/v1/customers" and method == "POST":
            payload = store.create(params, livemode=livemode)
        elif path == "/v1/account" and method == "GET":
            # Enough of the account for clients that look it up first (dj-stripe does).
            payload = _ACCOUNT if record.account is None else {**_ACCOUNT, "id": record.account}
        elif method == "GET" and (related := _RELATED_PATH.fullmatch(path)):
            # Read-only lists of a customer's related objects, for clients that walk them.
            customer = store.get_live(unquote(related.group(1)))
            items = list(customer.sources.values()) if related.group(2) == "sources" else []
            wanted = params.get("object")
            payload = {
                "object": "list",
                "data": [copy.deepcopy(i) for i in items if not wanted or i.get("object") == wanted],
                "has_more": False,
                "url": path,
            }
        elif method == "GET" and path in ("/v1/payment_methods", "/v1/subscriptions"):
            payload = {"object": "list", "data": [], "has_more": False, "url": path}
        elif path == "/v1/accounts" and method == "GET":
            payload = {
                "object": "list",
                "data": [],
                "has_more": False,
                "url": "/v1/accounts",
            }  # no connected accounts
        elif match and method in ("GET", "POST", "DELETE"):
            customer_id = unquote(match.group(1))
            operation = {
                "GET": store.retrieve,
                "POST": store.update,
                "DELETE": store.delete,
            }[method]
            payload = operation(customer_id, params)
        else:
            raise FakeStripeAPIError(404, f"Unrecognized request URL ({method}: {path}).")
    except FakeStripeAPIError as error:
        return _error_response(error)
    return _Response(200, _json_bytes(payload))
