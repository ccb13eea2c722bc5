"""The admin: every ModelAdmin, its forms, fields and display helpers.

Nothing else in the app imports this package; Django's admin autodiscovery imports it,
and it imports the modules that register ModelAdmins.

Modules and their public names:

- ``customers``: The admin: edit customers; saving queues a push of exactly what changed.
  Public: ``SECTION_TITLES``, ``SECTION_OPTIONS``, ``LEGACY_PAYMENT``, ``ACTION_HELP``,
  ``CustomerActionForm``, ``CustomerAdmin``.
- ``display``: How the admin shows a customer's sync: the status badge, the last error, what the next push
  sends, links.
  Public: ``DASHBOARD``, ``ONCE_LABELS``, ``BADGE_COLOURS``, ``ERROR_LABELS``, ``badge``, ``error_summary``,
  ``error_details``, ``pending_changes``, ``whole_note``, ``sent``, ``when``, ``dashboard_url``,
  ``stripe_link``, ``truncated``, ``admin_link``, ``shown``.
- ``fields``: Form fields for Stripe's composite values, edited through their parts, no JSON boxes.
  Public: ``enum_choices``, ``RowsWidget``, ``MetadataField``, ``CustomFieldsField``, ``PartsWidget``,
  ``AddressField``, ``ShippingWidget``, ``ShippingField``, ``LocalesField``.
- ``filters``: The customer list's filters by Stripe account and by mode, and the Account admin.
  Public: ``NO_ACCOUNT``, ``several_accounts``, ``account_label``, ``AccountFilter``,
  ``CustomerAccountFilter``, ``ModeFilter``, ``AccountAdmin``.
- ``forms``: The admin's customer form: a proper field for every parameter, built from the table.
  Public: ``ABSENT``, ``Spec``, ``SPECIAL``, ``spec``, ``model_params``, ``extra_params``, ``form_fields``,
  ``field_for_param``, ``CustomerForm``.
- ``overview``: The sync's health per account (``sync.status()``), a page of the customer admin
  linked from the app's index, each count linked to the list it counts.
  Public: ``TEMPLATE``, ``LEVELS``, ``Figure``, ``Card``, ``age``, ``span``, ``account_filters``, ``card``,
  ``overview_view``.
- ``owner``: The site's own forms and admin of the owner model (``CUSTOMERSYNC["OWNER_MODEL"]``).
  Public: ``PANEL_FIELDS``, ``PANEL_ERROR_KEYS``, ``customer_of``, ``stripe_refusal``, ``OwnerFormMixin``,
  ``OwnerAdminMixin``.
- ``params``: Parameters as an operator reads them: names and values, never a form body or JSON.
  Public: ``UNSET``, ``Row``, ``owner_of``, ``change_rows``, ``readable``, ``sent_lines``.
- ``records``: The sync's records in the admin, read-only: the sync log (push attempts), conflicts, webhook
  events, the events cursors and drift.
  Public: ``HISTORY_ROWS``, ``RECORD_FORM``, ``ReadOnlyMixin``, ``customer_title``, ``attempt_number``,
  ``attempt_error``, ``sent_names``, ``PushAttemptAdmin``, ``ConflictAdmin``, ``WebhookEventAdmin``,
  ``EventCursorAdmin``, ``DriftAdmin``, ``history_table``, ``conflicts_table``.
"""

# Django's admin autodiscovery imports this package: these modules register the ModelAdmins.
from . import customers, filters, records  # noqa: F401
