"""The customer store and the API's routes: what each ``/v1`` request does to an account's customers.

Beside list, search, retrieve, create, update and delete (as the API does
them), the store adds customers directly and seeds plausible, deterministic
ones for tests and demos. Beside the customer endpoints the routes answer just
enough of the account and of customers' related lists for clients that look
them up.

Public names: ``CustomerStore``, ``route``, ``error_response``.
"""

from __future__ import annotations

import copy
import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from .handler import RecordedRequest, Response, json_bytes
from .rules import (
    CUSTOMER_FIELDS,
    INTEGER,
    Customer,
    FakeStripeAPIError,
    apply_params,
    expansions,
    invalid,
    new_customer,
    no_such_customer,
    normalize_field,
    random_id,
    reject_unknown_params,
    string_param,
)


def error_response(error: FakeStripeAPIError, headers: Mapping[str, str] | None = None) -> Response:
    return Response(error.status, json_bytes(error.body()), dict(headers or {}))


# Stripe's search query language, as much of it as customers' exact matches need: clauses
# ``field:value`` (``-`` before one negates it) joined by spaces or by ``AND`` or ``OR`` (one of
# the two in a query, either case). A string is in single or double quotes; a backslash in it
# makes the next character plain, so a quote or a backslash can be part of the value.
_STRING = "|".join((r"'(?:[^'\\]|\\.)*'", r'"(?:[^"\\]|\\.)*"'))
_SEARCH_CLAUSE = re.compile(
    rf"(?P<negated>-)?(?P<field>email|name|phone|metadata)(?:\[(?P<key>{_STRING})\])?:(?P<value>{_STRING})",
    re.DOTALL,
)
_SEARCH_JOIN = re.compile(r"(AND|OR)\s+", re.IGNORECASE)
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def _unquoted(string: str) -> str:
    return _ESCAPED.sub(r"\1", string[1:-1])


def parse_search(query: str) -> tuple[str, list[tuple[bool, str, str | None, str]]]:
    """A search query as its join (``"AND"`` or ``"OR"``) and its clauses ``(negated, field,
    metadata key or None, value)``; ``FakeStripeAPIError`` for anything else, as Stripe answers."""
    clauses: list[tuple[bool, str, str | None, str]] = []
    joins: set[str] = set()
    position, end = 0, len(query)
    while True:
        while position < end and query[position].isspace():
            position += 1
        if position == end:
            break
        if clauses and (join := _SEARCH_JOIN.match(query, position)):
            joins.add(join.group(1).upper())
            position = join.end()
        clause = _SEARCH_CLAUSE.match(query, position)
        if clause is None or (clause.end() < end and not query[clause.end()].isspace()):
            raise invalid(f"Invalid search query: {query!r}", "query", "search_query_invalid")
        field, key = clause.group("field"), clause.group("key")
        if (field == "metadata") != (key is not None):
            raise invalid(f"Invalid search query: {query!r}", "query", "search_query_invalid")
        key = None if key is None else _unquoted(key)
        clauses.append((bool(clause.group("negated")), field, key, _unquoted(clause.group("value"))))
        position = clause.end()
    if not clauses or len(joins) > 1:
        raise invalid(f"Invalid search query: {query!r}", "query", "search_query_invalid")
    return (joins.pop() if joins else "AND"), clauses


# Plausible, deterministic data for seed().
_FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Frances", "Tim")


_LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson", "Allen", "Lee")


_PLACES = (
    ("London", "GB", "10 Downing Street", "SW1A 2AA", None),
    ("Paris", "FR", "5 Avenue Anatole France", "75007", None),
    ("Berlin", "DE", "Platz der Republik 1", "11011", None),
    ("New York", "US", "350 Fifth Avenue", "10118", "NY"),
    ("Tokyo", "JP", "1-1 Chiyoda", "100-8111", "Tokyo"),
)


_LOCALES = (["en"], ["fr", "en"], ["de"], ["en-US"], ["ja", "en"])


_SEGMENTS = ("smb", "enterprise", "startup")


class CustomerStore:
    """Customers in insertion order and the API operations on them. Not thread-safe: the server locks."""

    def __init__(self) -> None:
        self.customers: dict[str, Customer] = {}
        self._ids: list[str] = []
        self._position: dict[str, int] = {}

    def _order(self) -> tuple[list[str], dict[str, int]]:
        """Ids in insertion order (the API lists newest first) and each one's place, kept until
        the count changes: customers are only ever added (an update keeps its place)."""
        if len(self._ids) != len(self.customers):
            self._ids = list(self.customers)
            self._position = {customer_id: index for index, customer_id in enumerate(self._ids)}
        return self._ids, self._position

    def get_live(self, customer_id: str) -> Customer:
        """The customer, unless missing or deleted (then a 404 naming it)."""
        customer = self.customers.get(customer_id)
        if customer is None or customer.deleted:
            raise no_such_customer(customer_id)
        return customer

    def list_page(self, params: Mapping[str, Any]) -> dict[str, Any]:
        reject_unknown_params(params, ("limit", "starting_after", "ending_before", "email", "expand", "created"))
        created = params.get("created")
        bounds: dict[str, int] = {}
        if created is not None:
            if not isinstance(created, Mapping) or set(created) - {"gt", "gte", "lt", "lte"}:
                raise invalid("Invalid created: use created[gt], [gte], [lt] or [lte]", "created")
            for op, text in created.items():
                if not INTEGER.fullmatch(str(text)):
                    raise invalid(f"Invalid integer: {text}", f"created[{op}]", "parameter_invalid_integer")
                bounds[op] = int(text)

        def in_range(stamp: int) -> bool:
            return (
                stamp > bounds.get("gt", stamp - 1)
                and stamp >= bounds.get("gte", stamp)
                and stamp < bounds.get("lt", stamp + 1)
                and stamp <= bounds.get("lte", stamp)
            )

        limit = 10
        if "limit" in params:
            text = string_param(params["limit"], "limit")
            if not INTEGER.fullmatch(text):
                raise invalid(f"Invalid integer: {text}", "limit", "parameter_invalid_integer")
            limit = int(text)
            if not 1 <= limit <= 100:
                raise invalid("Invalid limit: must be between 1 and 100", "limit")
        if "starting_after" in params and "ending_before" in params:
            raise invalid(
                "You may only specify one of these parameters: ending_before, starting_after.",
                "ending_before",
            )
        ids, position = self._order()
        email = params.get("email")

        def listed(indexes: Iterable[int]) -> list[Customer]:
            """The first ``limit + 1`` customers listed at these places (one more tells ``has_more``)."""
            found = []
            for index in indexes:
                c = self.customers[ids[index]]
                if not c.deleted and (email is None or c.obj["email"] == email) and in_range(c.obj["created"]):
                    found.append(c)
                    if len(found) > limit:
                        break
            return found

        if "starting_after" in params:
            cursor = string_param(params["starting_after"], "starting_after")
            if cursor not in position:
                raise no_such_customer(cursor, param="starting_after")
            found = listed(range(position[cursor] - 1, -1, -1))
            page = found[:limit]
        elif "ending_before" in params:
            cursor = string_param(params["ending_before"], "ending_before")
            if cursor not in position:
                raise no_such_customer(cursor, param="ending_before")
            found = listed(range(position[cursor] + 1, len(ids)))  # the nearest newer ones first
            page = found[:limit][::-1]  # the page just before the cursor, still newest first
        else:
            found = listed(range(len(ids) - 1, -1, -1))
            page = found[:limit]
        return {
            "object": "list",
            # The stored objects, not copies: the page is encoded at once, under the server's lock.
            "data": [customer.obj for customer in page],
            "has_more": len(found) > limit,
            "url": "/v1/customers",
        }

    def search(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``GET /v1/customers/search``: exact matches on email, name, phone and
        ``metadata['key']`` (``parse_search``); Stripe's index lag is not modelled."""
        reject_unknown_params(params, ("query", "limit", "page", "expand"))
        join, clauses = parse_search(string_param(params.get("query", ""), "query"))

        def holds(obj: dict[str, Any], negated: bool, field: str, key: str | None, value: str) -> bool:
            actual = (obj.get("metadata") or {}).get(key) if field == "metadata" else obj.get(field)
            return (actual == value) != negated

        combine = all if join == "AND" else any
        found = [
            c.render()
            for c in reversed(self.customers.values())
            if not c.deleted and combine(holds(c.obj, *clause) for clause in clauses)
        ]
        return {
            "object": "search_result",
            "data": found[: int(params.get("limit") or 10)],
            "has_more": False,
            "next_page": None,
            "url": "/v1/customers/search",
        }

    def retrieve(self, customer_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        reject_unknown_params(params, ("expand",))
        customer = self.customers.get(customer_id)
        if customer is None:
            raise no_such_customer(customer_id)
        return customer.render(expansions(params))

    def create(self, params: Mapping[str, Any], *, livemode: bool = False) -> dict[str, Any]:
        customer = Customer(new_customer(random_id("cus_"), int(time.time())))
        customer.obj["livemode"] = livemode
        apply_params(customer, params)
        self.customers[customer.obj["id"]] = customer
        return customer.render(expansions(params))

    def update(self, customer_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        scratch = copy.deepcopy(self.get_live(customer_id))
        apply_params(scratch, params)  # raises before anything is stored
        self.customers[customer_id] = scratch
        return scratch.render(expansions(params))

    def delete(self, customer_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        reject_unknown_params(params, ())
        customer = self.get_live(customer_id)
        customer.deleted = True
        return customer.deleted_stub()

    def add(self, fields: Mapping[str, Any], *, created: int | None = None) -> Customer:
        unknown = sorted(set(fields) - CUSTOMER_FIELDS)
        if unknown:
            raise ValueError(f"not customer object fields: {', '.join(unknown)}")
        customer_id = fields.get("id") or random_id("cus_")
        if customer_id in self.customers:
            raise ValueError(f"customer {customer_id!r} already exists")
        obj = new_customer(customer_id, int(time.time()) if created is None else created)
        for name, value in fields.items():
            if name not in ("id", "object"):
                obj[name] = normalize_field(name, value)
        customer = Customer(obj)
        if obj["default_source"] is not None:  # keep default_source pointing at a real source
            customer.attach(obj["default_source"])
        self.customers[customer_id] = customer
        return customer

    def seed(self, n: int, prefix: str) -> list[Customer]:
        created = []
        for index in range(n):
            first = _FIRST_NAMES[index % len(_FIRST_NAMES)]
            last = _LAST_NAMES[(index * 3 + index // len(_FIRST_NAMES)) % len(_LAST_NAMES)]
            city, country, line1, postal_code, state = _PLACES[index % len(_PLACES)]
            digest = ""
            for salt in range(1000):  # deterministic ids, skipping ones already taken
                digest = hashlib.sha256(f"{prefix}:{index}:{salt}".encode()).hexdigest()
                if f"cus_{digest[:14]}" not in self.customers:
                    break
            fields = {
                "id": f"cus_{digest[:14]}",
                "name": f"{first} {last}",
                "email": f"{first}.{last}.{index + 1}@example.com".lower(),
                "phone": f"+1555{index + 1:07d}",
                "description": f"{prefix} {index + 1}",
                "invoice_prefix": digest[14:22].upper(),
                "metadata": {"seed_index": str(index + 1), "segment": _SEGMENTS[index % len(_SEGMENTS)]},
                "address": {
                    "city": city,
                    "country": country,
                    "line1": line1,
                    "line2": None,
                    "postal_code": postal_code,
                    "state": state,
                },
                "preferred_locales": list(_LOCALES[index % len(_LOCALES)]),
            }
            created.append(self.add(fields, created=1_700_000_000 + index * 3600))
        return created


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


def route(store: CustomerStore, record: RecordedRequest, *, livemode: bool = False) -> Response:
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
        return error_response(error)
    return Response(200, json_bytes(payload))
