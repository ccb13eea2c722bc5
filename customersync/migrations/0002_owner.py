"""The owner link: a foreign key to ``CUSTOMERSYNC["OWNER_MODEL"]``, when a site names one.

Like ``AUTH_USER_MODEL``, the owner model is chosen before the first migrate:
this migration adds the link (with a swappable dependency on the owner's
app) only when the setting is present as it runs.
"""

import django.db.models.deletion
from django.db import migrations, models

from customersync.conf import owner_model_label

OWNER_MODEL = owner_model_label()


class Migration(migrations.Migration):
    dependencies = [("customersync", "0001_initial")]
    if OWNER_MODEL:
        dependencies.append(migrations.swappable_dependency(OWNER_MODEL))

    operations = [
        migrations.AddField(
            model_name="customer",
            name="owner_values",
            field=models.JSONField(blank=True, default=dict, editable=False, verbose_name="values from the owner"),
        ),
    ]
    if OWNER_MODEL:
        operations += [
            migrations.AddField(
                model_name="customer",
                name="owner",
                field=models.ForeignKey(
                    blank=True,
                    null=True,
                    on_delete=django.db.models.deletion.SET_NULL,
                    related_name="customersync_customers",
                    to=OWNER_MODEL,
                    verbose_name="owner",
                ),
            ),
            migrations.AddConstraint(
                model_name="customer",
                constraint=models.UniqueConstraint(fields=("owner",), name="customersync_one_customer_per_owner"),
            ),
        ]
