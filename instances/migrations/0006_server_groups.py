"""Operators manage gateway servers and may repair instances' webhooks; both groups see servers and LIDs."""

from django.db import migrations

from chips.groups import grant

VIEW = ["view_gatewayserver", "view_contactidentity"]


def forwards(apps, schema_editor):
    grant(apps, schema_editor, app_label="instances",
          operators=[*VIEW, "add_gatewayserver", "change_gatewayserver", "change_instance"], viewers=VIEW)


class Migration(migrations.Migration):
    dependencies = [("instances", "0005_gateway_servers")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
