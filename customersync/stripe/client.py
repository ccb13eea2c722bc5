"""All HTTP to Stripe goes through ``StripeClient``: one ``requests.Session``.

Every call carries ``Authorization: Bearer``, the pinned ``Stripe-Version``, a
User-Agent naming this app, a timeout per connect and read, and a total
deadline (``transport``); every POST carries an ``Idempotency-Key``. The client does not retry: retrying is the caller's
decision (the Celery task), so nothing is hidden here. Errors become
``StripeError`` subclasses that never contain the key.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.auth
from urllib3.exceptions import HTTPError as TransportError

from .. import __version__
from ..core.encoding import encode
from ..exceptions import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    IdempotencyError,
    InvalidRequestError,
    PermissionDeniedError,
    RateLimitError,
    StripeError,
)
from . import transport
from .transport import DeadlineAdapter, MalformedResponse, ResponseTooLarge, Watchdog

logger = logging.getLogger(__name__)

USER_AGENT = f"customersync/{__version__} python-requests/{requests.__version__}"


def search_string(value: str) -> str:
    """``value`` as a string of Stripe's search query language: in quotes, a quote or a backslash
    inside escaped with a backslash, so no value can end the string and add a clause
    (``x' OR email:'a@b.c`` stays one value)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


_ERRORS_BY_STATUS: dict[int, type[StripeError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: InvalidRequestError,
    403: PermissionDeniedError,
    404: InvalidRequestError,
    409: IdempotencyError,
    429: RateLimitError,
}


# The defaults of CUSTOMERSYNC's API_BASE and API_VERSION (conf.DEFAULTS reads these).
DEFAULT_API_BASE = "https://api.stripe.com"
DEFAULT_API_VERSION = "2026-10-28.endive"
# Every Idempotency-Key this app sends starts with it (a webhook event's
# request.idempotency_key tells the app's own pushes apart by it).
IDEMPOTENCY_PREFIX = "customersync-"


# Called right before a request goes; returns None or what to call once it is written.
BeforeSend = Callable[[], "Callable[[], None] | None"]


class StripeObject(dict[str, Any]):
    """Stripe's JSON answer, with the ``Request-Id`` of the response that carried it."""

    def __init__(self, data: Mapping[str, Any], request_id: str | None = None) -> None:
        super().__init__(data)
        self.request_id = request_id


class _BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <key>``, added as the request is prepared; never shown by its repr."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._api_key}"
        return request

    def __repr__(self) -> str:
        return "<Bearer [redacted]>"


# 64 openers in a row, whitespace between: JSON no Stripe object comes near. Found as a run of
# 64 "{" once whitespace (re's \s for bytes) is dropped and "[" reads as "{": a scan at C speed,
# where a regex tried a match at every opener of every page.
_OPENERS = bytes.maketrans(b"[", b"{")
_DEEP_RUN = b"{" * 64
_STRIPE_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
# A Stripe account id (a connected account, in Stripe-Context): the models and the webhooks use it too.
ACCOUNT_ID = re.compile(r"acct_[A-Za-z0-9]{1,250}")


def _path_id(customer_id: str) -> str:
    """A Stripe id as a path segment; anything else (``.``, ``..``, ``a/b``, '') is refused before a request."""
    if not isinstance(customer_id, str) or not _STRIPE_ID.fullmatch(customer_id):
        raise InvalidRequestError(f"Not a Stripe customer id: {customer_id!r}.", param="customer")
    return customer_id


class StripeClient:
    """A small client for the customer endpoints."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str = DEFAULT_API_BASE,
        api_version: str = DEFAULT_API_VERSION,
        timeout: float = 20.0,
        deadline: float = 30.0,
        session: requests.Session | None = None,
        stripe_account: str | None = None,
        account_header: str = "Stripe-Context",
    ) -> None:
        """``timeout`` bounds the connect and each read; ``deadline`` the whole request, answer
        included (seconds). A ``session`` passed in gets the adapter that enforces the deadline
        mounted for ``api_base``. ``stripe_account``: a connected account (``acct_...``) every
        request acts on, sent in ``account_header`` (``Stripe-Context``, or ``Stripe-Account``
        for API versions before it)."""
        if not api_key:
            raise ConfigurationError("StripeClient needs an API key (CUSTOMERSYNC['API_KEY']).")
        if not deadline > 0:
            raise ConfigurationError(f"The request deadline must be a positive number of seconds, not {deadline!r}.")
        if stripe_account is not None and not ACCOUNT_ID.fullmatch(str(stripe_account)):
            raise ConfigurationError(f"Not a Stripe account id: {stripe_account!r} (acct_...).")
        if account_header not in ("Stripe-Context", "Stripe-Account"):
            raise ConfigurationError(f"The account header is Stripe-Context or Stripe-Account, not {account_header!r}.")
        self.stripe_account = stripe_account
        self.account_header = account_header
        self._api_key = api_key
        self._auth = _BearerAuth(api_key)
        self.api_base = api_base.rstrip("/")
        self.api_version = api_version
        self.timeout = timeout
        self.deadline = deadline
        self.session = session or requests.Session()
        self.session.mount(self.api_base + "/", DeadlineAdapter())
        self._settings: dict[str, Any] = {}
        if session is None:
            # The environment's proxies and CA bundle (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE...),
            # read once for this client: requests reads the whole environment on every request
            # otherwise, which cost a loopback push more than its round trip to the database.
            self._settings = dict(self.session.merge_environment_settings(self.api_base + "/", {}, None, None, None))
            self._settings.pop("stream", None)
            self.session.trust_env = False

    def __repr__(self) -> str:  # never show the key
        account = f" {self.stripe_account}" if self.stripe_account else ""
        return f"<StripeClient {self.api_base}{account} version={self.api_version}>"

    # -- the calls ---------------------------------------------------------

    def retrieve_customer(self, customer_id: str, *, before_send: BeforeSend | None = None) -> StripeObject:
        return self._request("GET", f"/v1/customers/{_path_id(customer_id)}", before_send=before_send)

    def list_customers(
        self,
        *,
        limit: int = 100,
        starting_after: str | None = None,
        created: Mapping[str, int] | None = None,
        before_send: BeforeSend | None = None,
    ) -> StripeObject:
        """One page of customers (newest first): ``{"data": [...], "has_more": bool}``.

        ``created`` filters on creation time, e.g. ``{"gte": 1700000000}``.
        """
        query: dict[str, Any] = {"limit": limit}
        if starting_after:
            query["starting_after"] = starting_after
        for op, value in (created or {}).items():
            query[f"created[{op}]"] = value
        return self._request("GET", "/v1/customers", query=query, before_send=before_send)

    def list_events(
        self,
        *,
        types: Sequence[str] = (),
        limit: int = 100,
        starting_after: str | None = None,
        ending_before: str | None = None,
        created: Mapping[str, int] | None = None,
        before_send: BeforeSend | None = None,
    ) -> StripeObject:
        """One page of the account's events, newest first: ``{"data": [...], "has_more": bool}``.

        ``types``: event types (``types[]``, at most 20); ``ending_before``: the page of events
        just newer than that event (``has_more``: newer ones are left); ``created``: e.g.
        ``{"gt": 1700000000}``. Stripe lists the events of the last 30 days.
        """
        query: list[tuple[str, Any]] = [("limit", limit)]
        query += [("types[]", kind) for kind in types]
        if starting_after:
            query.append(("starting_after", starting_after))
        if ending_before:
            query.append(("ending_before", ending_before))
        query += [(f"created[{op}]", value) for op, value in (created or {}).items()]
        return self._request("GET", "/v1/events", query=query, before_send=before_send)

    def iter_customers(
        self,
        *,
        limit: int = 100,
        starting_after: str | None = None,
        created: Mapping[str, int] | None = None,
        max_items: int | None = None,
        before_page: Callable[[], object] | None = None,
        before_send: BeforeSend | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Every page of customers (each a non-empty list), following ``starting_after`` until
        ``has_more`` is false, or until ``max_items`` were listed. ``before_page`` runs before
        each request (a pull paces itself with it); ``before_send`` is each request's (``update_customer``'s)."""
        remaining = max_items
        # A server repeating itself would make the walk endless. A page may not end on an id of
        # the page before, nor on an earlier cursor; earlier cursors are met by comparing with a
        # lagging one whose lag doubles (Brent's cycle finding), so a walk of any length holds
        # one page of ids, not every id it listed.
        previous: set[str] = set()
        lagging, lag, power = starting_after, 0, 1
        while remaining is None or remaining > 0:
            if before_page is not None:
                before_page()
            size = limit if remaining is None else min(limit, remaining)
            sending = {"before_send": before_send} if before_send is not None else {}
            page = self.list_customers(limit=size, starting_after=starting_after, created=created, **sending)
            data = page.get("data") or []
            if not isinstance(data, list) or not all(
                isinstance(c, dict) and isinstance(c.get("id"), str) for c in data
            ):
                raise APIError("Stripe's customer list is not a list of customers with ids.", http_status=200)
            last = data[-1]["id"] if data else None
            if last is not None and not _STRIPE_ID.fullmatch(last):
                # The next page starts after it, and a resumed pull from it: one item's junk id
                # stops the walk here, not in a request or a write that cannot carry it.
                raise APIError(
                    "Stripe's customer list ends on an item whose id is no Stripe id: stopped.", http_status=200
                )
            if last is not None and (last in (starting_after, lagging) or last in previous):
                raise APIError(
                    f"Stripe's customer list repeated itself after {starting_after}: stopped.", http_status=200
                )
            previous = {c["id"] for c in data}
            if data:
                yield data
            if remaining is not None:
                remaining -= len(data)
            if not page.get("has_more") or not data:
                return
            starting_after = last
            lag += 1
            if lag == power:
                lagging, lag, power = starting_after, 0, power * 2

    def search_customers(self, query: str, *, limit: int = 10) -> StripeObject:
        """Customers matching a search query (``metadata['k']:'v'``): ``{"data": [...]}``.

        Stripe's search index lags writes by up to a minute: fine for finding
        what an earlier run created, not a lock against a concurrent create.
        Build the query's values with ``search_string``, never by formatting them in.
        """
        return self._request("GET", "/v1/customers/search", query={"query": query, "limit": limit})

    def search_customers_by_metadata(self, key: str, value: str, *, limit: int = 10) -> StripeObject:
        """Customers whose ``metadata[key]`` is ``value`` by Stripe's search (both quoted, whatever they hold).

        What the search answers is Stripe's reading of the query: a caller that acts on a
        customer found checks its metadata itself.
        """
        query = f"metadata[{search_string(key)}]:{search_string(value)}"
        return self.search_customers(query, limit=limit)

    def update_customer(
        self,
        customer_id: str,
        params: Mapping[str, Any] | None = None,
        *,
        body: str | None = None,
        idempotency_key: str | None = None,
        before_send: BeforeSend | None = None,
    ) -> StripeObject:
        """Update a customer with ``params``, or with an already encoded ``body``
        (a retry resends the exact bytes it sent under the same key). ``before_send``: called
        right before the request goes, once it is built (a rate budget's last wait); what it
        returns, if not None, is called once the request is written (the budget's log of sends)."""
        path = f"/v1/customers/{_path_id(customer_id)}"
        return self._request(
            "POST", path, params=params, body=body, idempotency_key=idempotency_key, before_send=before_send
        )

    def create_customer(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        body: str | None = None,
        idempotency_key: str | None = None,
        before_send: BeforeSend | None = None,
    ) -> StripeObject:
        return self._request(
            "POST", "/v1/customers", params=params, body=body, idempotency_key=idempotency_key, before_send=before_send
        )

    def delete_customer(self, customer_id: str) -> StripeObject:
        return self._request("DELETE", f"/v1/customers/{_path_id(customer_id)}")

    # -- plumbing ----------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        body: str | None = None,
        idempotency_key: str | None = None,
        before_send: BeforeSend | None = None,
    ) -> StripeObject:
        headers = {
            "Stripe-Version": self.api_version,
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        if self.stripe_account:
            headers[self.account_header] = self.stripe_account
        data = None
        if method == "POST":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Idempotency-Key"] = idempotency_key or f"{IDEMPOTENCY_PREFIX}{uuid.uuid4()}"
            data = (body if body is not None else encode(params or {})).encode("ascii")
        url = self.api_base + path
        written = before_send() if before_send is not None else None
        response, content = self._send(method, path, url, written, params=query, data=data, headers=headers)
        try:
            return self._interpret(response, content, method, path)
        except StripeError:
            raise
        except Exception as err:  # noqa: BLE001 - an answer no check foresaw is still a StripeError
            raise APIError(
                f"Stripe's answer to {method} {path} cannot be read ({type(err).__name__}).",
                http_status=response.status_code,
                should_retry=False,
            ) from None

    def _send(
        self, method: str, path: str, url: str, written: Callable[[], None] | None = None, **kwargs: Any
    ) -> tuple[requests.Response, bytes]:
        """The response and its whole body, read within the deadline and the size cap (``written``:
        called once the request is written)."""
        watchdog = Watchdog(self.deadline, written)
        try:
            with watchdog:
                # The per-read timeout never outlasts the deadline either.
                wait = min(self.timeout, watchdog.remaining())
                # The key goes in by an auth object, so no dict a traceback shows holds it;
                # redirects are never followed (the body and the key stay with api_base).
                response = self.session.request(
                    method,
                    url,
                    timeout=wait,
                    stream=True,
                    allow_redirects=False,
                    auth=self._auth,
                    **self._settings,
                    **kwargs,
                )
                with response:
                    content = transport.read_body(response, transport.MAX_RESPONSE_BYTES)
        except MalformedResponse as err:
            # Not Stripe's framing: nothing of it is read, and the same answer would come again.
            raise APIError(
                f"Stripe's answer to {method} {path} cannot be read: {err.reason}.",
                http_status=response.status_code,
                request_id=response.headers.get("Request-Id"),
                should_retry=False if 200 <= response.status_code < 300 else None,
            ) from None
        except ResponseTooLarge as err:
            raise APIError(
                f"Stripe's answer to {method} {path} is larger than {err.limit} bytes "
                f"({err.limit / 2**20:g} MiB), the most this client reads.",
                http_status=response.status_code,
                request_id=response.headers.get("Request-Id"),
            ) from None
        except (requests.RequestException, TransportError, OSError) as err:
            if watchdog.cut or watchdog.remaining() == 0:
                raise self._deadline_passed(method, path) from None
            if isinstance(err, requests.Timeout):
                raise APIConnectionError(
                    f"Timed out talking to Stripe ({method} {path}): {type(err).__name__}."
                ) from None
            # Not chained: the transport's frames hold the prepared request's headers,
            # which a debug page or an error e-mail would show.
            raise APIConnectionError(f"Could not talk to Stripe ({method} {path}): {type(err).__name__}.") from None
        if watchdog.cut:  # the answer looked complete, but only because its connection was cut
            raise self._deadline_passed(method, path)
        return response, content

    def _deadline_passed(self, method: str, path: str) -> APIConnectionError:
        return APIConnectionError(
            f"The {self.deadline:g} s deadline passed before Stripe's answer to {method} {path} was complete "
            "(CUSTOMERSYNC['REQUEST_DEADLINE']); the request may have been applied."
        )

    @staticmethod
    def _interpret(response: requests.Response, content: bytes, method: str, path: str) -> StripeObject:
        request_id = response.headers.get("Request-Id")
        should_retry_header = response.headers.get("Stripe-Should-Retry")
        should_retry = None if should_retry_header is None else should_retry_header.lower() == "true"
        problem = ""
        try:
            if _DEEP_RUN in content.translate(_OPENERS, b" \t\n\r\f\v"):
                # Refused before the parser recurses to its limit (Stripe's objects nest a few levels).
                raise RecursionError
            payload = json.loads(content)
        except ValueError:
            payload = None
        except RecursionError:  # nested deeper than the parser's recursion limit
            payload, problem = None, " (nested too deep to parse)"
        if 300 <= response.status_code < 400:
            target = urlsplit(response.headers.get("Location") or "").netloc or "the same host"
            raise APIError(
                f"Stripe answered {method} {path} with a redirect (HTTP {response.status_code}) to {target}; "
                "redirects are never followed, so nothing was sent there.",
                http_status=response.status_code,
                request_id=request_id,
                should_retry=False,
            )
        if 200 <= response.status_code < 300:
            if not isinstance(payload, dict):
                raise APIError(
                    f"Stripe answered {method} {path} with HTTP {response.status_code} but the body is not "
                    f"JSON{problem}.",
                    http_status=response.status_code,
                    request_id=request_id,
                    should_retry=should_retry,
                )
            return StripeObject(payload, request_id)
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            raise APIError(
                f"Stripe answered {method} {path} with HTTP {response.status_code} and a body that is not "
                f"a Stripe error{problem}.",
                http_status=response.status_code,
                request_id=request_id,
                should_retry=should_retry,
            )
        status = response.status_code
        error_type = error.get("type")
        cls = _ERRORS_BY_STATUS.get(status, APIError)
        if error_type == "idempotency_error":
            cls = IdempotencyError
        raise cls(
            str(error.get("message") or f"HTTP {status}"),
            http_status=status,
            type=error_type,
            code=error.get("code"),
            param=error.get("param"),
            request_id=request_id,
            should_retry=should_retry,
        )


__all__ = [
    "StripeClient",
    "StripeObject",
    "USER_AGENT",
    "DEFAULT_API_BASE",
    "DEFAULT_API_VERSION",
    "IDEMPOTENCY_PREFIX",
]
