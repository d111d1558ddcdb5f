"""Operators may look at activations and retry failed ones; Viewers only look."""

from django.db import migrations

from chips.groups import grant

VIEW = ["view_activationjob", "view_smsreceipt"]


def forwards(apps, schema_editor):
    grant(apps, schema_editor, app_label="activation", operators=[*VIEW, "change_activationjob"], viewers=VIEW)


class Migration(migrations.Migration):
    dependencies = [("activation", "0001_initial"), ("chips", "0002_operator_groups")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
