"""Operators may flip the kill switch and tune chip capacities; Viewers only look."""

from django.db import migrations

from chips.groups import grant

VIEW = ["view_instance", "view_contactbinding", "view_outboundmessage", "view_chipcapacity",
        "view_deliveryevent", "view_routingpolicy"]


def forwards(apps, schema_editor):
    grant(apps, schema_editor, app_label="instances",
          operators=[*VIEW, "change_routingpolicy", "change_chipcapacity"], viewers=VIEW)


class Migration(migrations.Migration):
    dependencies = [("instances", "0001_initial"), ("chips", "0002_operator_groups")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
