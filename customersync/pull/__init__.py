"""The pull: importing or refreshing the mirror from Stripe, a page at a time.

Modules and their public names:

- ``pages``: The pull: import or refresh the mirror from Stripe, a page at a time.
  Public: ``PullStats``, ``pull``, ``read_ahead``, ``pull_one``, ``store_page``.
- ``catchup``: After an outage, the mirror catches up by itself: Stripe's events log, and the reconcile.
  Public: ``RETENTION``, ``CatchUpStats``, ``ReconcileStats``, ``Share``, ``CursorHeld``, ``catch_up``, ``reconcile``,
  ``reconcile_due``, ``cursor_of``.
"""
