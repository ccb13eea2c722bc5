"""System checks: the settings, Celery's, and several accounts'.

``apps.py`` imports these modules so their checks are registered.

Modules and their public names:

- ``accounts``: System checks of several accounts: the platforms' settings, and (``check --database``) the
  accounts and customers against them.
  Public: ``check_platforms``, ``check_account_modes``.
- ``configuration``: System checks: the app's settings, and Celery settings that would defeat reliable pushes.
  Public: ``LOOPBACK``, ``LATE_ACK_TASKS``, ``check_settings``, ``check_celery``, ``check_worker_database``,
  ``check_owner``.
"""
