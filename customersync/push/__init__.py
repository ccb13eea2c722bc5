"""The push: the outbox, the fenced lease, one customer's push, and storing Stripe's answer.

From ``owner`` it takes only the mapping.

Modules and their public names:

- ``answer_checks``: Stripe's answers to a push: whether a 200 is usable as this customer's answer, and the
  customer an earlier run created for an owner (found by its metadata before creating another).
  Public: ``problem``, ``owners_customer_in_stripe``.
- ``confirm``: Storing Stripe's answer to a push: the confirmed state, keeping edits made meanwhile.
  Public: ``store``.
- ``ending``: How a push ends when something is raised between its lease and its confirm: the one rule.
  Public: ``OPEN``, ``database_away``, ``error_of``, ``attempt_fields``, ``unsent``, ``paused``, ``state_of``,
  ``error_on``.
- ``lease``: The per-customer lease: at most one request per customer in flight, across every worker.
  Public: ``db_now_plus``, ``request_deadline``, ``Lease``.
- ``outbox``: The outbox: every change owed to Stripe is a ``PendingPush`` row, and a task is published for
  it.
  Public: ``PUSH_TASK``, ``DRAIN_TASK``, ``SWEEP_TASK``, ``PUBLISH_BATCH``, ``queue_options``,
  ``rate_per_second``, ``enqueue``, ``publish``, ``producers``, ``publisher``, ``schedule_push``,
  ``record_change``, ``mark_for_push``, ``drain``, ``request_push``, ``sweep``.
- ``send``: The push, for one customer.
  Public: ``OPEN``, ``REDACTED``, ``Outcome``, ``PushResult``, ``Taken``, ``redact``, ``loggable``, ``push``.
"""
