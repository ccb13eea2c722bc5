"""Talking to Stripe: the client, its transport, and the fleet-wide rate budget.

It imports no models: what a request needs arrives as arguments.

Modules and their public names:

- ``client``: All HTTP to Stripe goes through ``StripeClient``: one ``requests.Session``.
  Public: ``USER_AGENT``, ``DEFAULT_API_BASE``, ``DEFAULT_API_VERSION``, ``IDEMPOTENCY_PREFIX``,
  ``BeforeSend``, ``StripeObject``, ``ACCOUNT_ID``, ``StripeClient``, ``search_string``.
- ``rate_budget``: A rate budget shared by every worker, kept in Redis.
  Public: ``WINDOW_SLACK``, ``HORIZON``, ``GAP``, ``CATCH_UP``, ``GOING_TTL``, ``LEAD``, ``SENT_WINDOW``,
  ``RateBudget``, ``LocalBudget``, ``budget``.
- ``transport``: How the client's bytes travel: a total deadline per request, and a cap on the answer's size.
  Public: ``MAX_RESPONSE_BYTES``, ``ResponseTooLarge``, ``Watchdog``, ``DeadlineAdapter``, ``read_body``.
"""
