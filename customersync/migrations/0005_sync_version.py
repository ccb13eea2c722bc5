"""An edit is written in one statement: the confirmed state's version, and one queued push per customer."""

from django.db import migrations, models


def one_queued_push_each(apps, schema_editor):
    """Older queued records of a customer join its newest, as a push would do, before the index."""
    PendingPush = apps.get_model("customersync", "PendingPush")
    db = schema_editor.connection.alias
    newest = {}
    for pk, customer_id in (
        PendingPush.objects.using(db).filter(state="pending").order_by("id").values_list("pk", "customer_id")
    ):
        if customer_id in newest:
            PendingPush.objects.using(db).filter(pk=newest[customer_id]).update(state="superseded", superseded_by_id=pk)
        newest[customer_id] = pk


class Migration(migrations.Migration):
    dependencies = [
        ("customersync", "0004_accounts"),
    ]

    operations = [
        migrations.RunPython(one_queued_push_each, migrations.RunPython.noop),
        migrations.AddField(
            model_name="customer",
            name="sync_version",
            field=models.PositiveBigIntegerField(default=0, editable=False, verbose_name="confirmed state version"),
        ),
        migrations.AddConstraint(
            model_name="pendingpush",
            constraint=models.UniqueConstraint(
                condition=models.Q(("state", "pending")), fields=("customer",), name="customersync_one_queued_push"
            ),
        ),
    ]
