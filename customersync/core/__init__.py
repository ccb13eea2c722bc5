"""The pure core: the parameter table, the diff, the merge, value shapes and Stripe's form encoding.

No Django, no Celery: ``tests/test_structure.py`` checks it.

Modules and their public names:

- ``diff``: The diff: last confirmed state + desired state -> the minimal update params.
  Public: ``MISSING``, ``same``, ``normalize``, ``diff``, ``describe``.
- ``encoding``: Stripe's form encoding (``application/x-www-form-urlencoded`` with brackets).
  Public: ``flatten``, ``encode``, ``decode``.
- ``merge``: The three-way merge of Stripe's state into the local mirror. Pure: no Django.
  Public: ``Merge``, ``merge``, ``norm``, ``to_local``.
- ``params``: Every parameter of ``POST /v1/customers/{customer}``, in one declarative table.
  Public: ``Shape``, ``Role``, ``ADDRESS_FIELDS``, ``Param``, ``SECTIONS``, ``PARAMS``, ``Table``, ``TABLE``,
  ``BY_NAME``, ``STATE_PARAMS``, ``SECRET_ROOTS``, ``get_path``, ``set_path``.
- ``redaction``: Secrets out of text that is stored or shown: error messages, the sync log, logs. Pure: no Django.
  Public: ``REDACTED``, ``SECRET_SHAPE``, ``scrub``, ``storable``.
- ``shapes``: The type each parameter's value must have, and the keys each object may hold. Pure: no Django.
  Public: ``kind``, ``check``.
- ``snapshot``: What an instance's fields held when they were last checked, to check again only what changed.
  Public: ``of``, ``take``, ``changed``.
"""
