"""Several Stripe accounts: ``Account`` rows, and each customer's account.

``stripe_id`` becomes unique per account (the same ``cus_`` id in two
accounts is two customers), and an owner has at most one customer per
account. Existing customers keep ``account=None``: the default platform's
own account, so a site with one account sees no change.
"""

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models

from customersync.conf import owner_model_label

OWNER_MODEL = owner_model_label()


class Migration(migrations.Migration):
    dependencies = [("customersync", "0003_lease_renewed_at")]

    operations = [
        migrations.CreateModel(
            name="Account",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "platform",
                    models.CharField(
                        default="default",
                        help_text="A name from CUSTOMERSYNC['PLATFORMS'], or 'default' for the top-level API_KEY.",
                        max_length=64,
                        validators=[
                            django.core.validators.RegexValidator(
                                "^[a-z0-9][a-z0-9_-]{0,63}$", "Lowercase letters, digits, _ and -."
                            )
                        ],
                        verbose_name="platform",
                    ),
                ),
                (
                    "stripe_account",
                    models.CharField(
                        blank=True,
                        help_text="The connected account's acct_... id; empty for the platform's own account.",
                        max_length=255,
                        validators=[
                            django.core.validators.RegexValidator(
                                "^acct_[A-Za-z0-9]{1,250}$", "A Stripe account id: acct_ and letters or digits."
                            )
                        ],
                        verbose_name="connected account",
                    ),
                ),
                ("name", models.CharField(blank=True, max_length=100, verbose_name="name")),
            ],
            options={
                "verbose_name": "Stripe account",
                "verbose_name_plural": "Stripe accounts",
                "ordering": ("platform", "stripe_account"),
            },
        ),
        migrations.AddConstraint(
            model_name="account",
            constraint=models.UniqueConstraint(
                fields=("platform", "stripe_account"), name="customersync_one_account_per_id"
            ),
        ),
        migrations.AddConstraint(
            model_name="account",
            constraint=models.CheckConstraint(
                condition=models.Q(("platform", "default"), ("stripe_account", ""), _negated=True),
                name="customersync_default_account_is_null",
            ),
        ),
        migrations.AddField(
            model_name="customer",
            name="account",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="customers",
                to="customersync.account",
                verbose_name="Stripe account",
            ),
        ),
        migrations.AddConstraint(
            model_name="customer",
            constraint=models.UniqueConstraint(
                fields=("account", "stripe_id"), name="customersync_stripe_id_per_account"
            ),
        ),
        migrations.AddConstraint(
            model_name="customer",
            constraint=models.UniqueConstraint(
                condition=models.Q(("account", None)),
                fields=("stripe_id",),
                name="customersync_stripe_id_default_account",
            ),
        ),
        migrations.AlterField(
            model_name="customer",
            name="stripe_id",
            field=models.CharField(blank=True, db_index=True, max_length=255, null=True, verbose_name="Stripe id"),
        ),
    ]
    if OWNER_MODEL:
        operations += [
            migrations.RemoveConstraint(model_name="customer", name="customersync_one_customer_per_owner"),
            migrations.AddConstraint(
                model_name="customer",
                constraint=models.UniqueConstraint(
                    fields=("owner", "account"), name="customersync_one_customer_per_owner"
                ),
            ),
            migrations.AddConstraint(
                model_name="customer",
                constraint=models.UniqueConstraint(
                    condition=models.Q(("account", None)),
                    fields=("owner",),
                    name="customersync_one_default_per_owner",
                ),
            ),
        ]
