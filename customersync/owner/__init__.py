"""Customers owned by the site's own model: the mapping, the mixin, the receivers, linking.

Modules and their public names:

- ``customers``: Owners and their customers at run time: saves, creation once, bulk refresh, write-back.
  Public: ``for_owner``, ``owner_pre_save``, ``owner_post_save``, ``check_owner``, ``unsent``, ``OwnerSyncResult``,
  ``sync_from_owners``, ``get_or_create_for``.
- ``linking``: Owners linked to customers already mirrored (``manage.py customersync_link``): matched, never
  guessed.
  Public: ``BATCH_SIZE``, ``LINKED``, ``ALREADY_LINKED``, ``AMBIGUOUS``, ``TAKEN``, ``NO_MATCH``, ``Matcher``,
  ``Outcome``, ``LinkResult``, ``matcher``, ``require_mapping``, ``link_owners``.
- ``mapping``: Customers owned by the site's own model: the mapping, kept in step both ways.
  Public: ``OWNER_METADATA_KEY``, ``parse_key``, ``Hop``, ``Source``, ``Mapping``, ``relation_path``, ``owner_value``,
  ``Refused``, ``write_back``, ``mapping``.
- ``related``: The models a mapped dotted path passes through, watched: their saves send the change.
  Public: ``prepare``, ``related_pre_save``, ``related_post_save``, ``check_related``, ``watched_models``,
  ``connect``.
- ``receivers``: What the app does when a customer, or its owner, is saved or deleted, wired in
  ``AppConfig.ready()``.
  Public: ``delete_in_stripe``, ``connect``.
- ``save``: What ``owner_model.OwnerMixin`` remembers: the owner's mapped values as loaded.
  Public: ``LOADED``, ``current``, ``keep``, ``remember``, ``keep_on_commit``, ``changes``, ``one_transaction``,
  ``problems``, ``check``.
- ``unlink``: Customers unlinked from a deleted owner: nothing in Stripe names it any longer.
  Public: ``FIELDS``, ``unlink``, ``owner_pre_delete``.
"""
