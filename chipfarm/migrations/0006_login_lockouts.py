"""Operators see failed logins and lockouts (django-axes) and clear a lockout by deleting its attempt row.

Viewers get nothing here: login attempts carry usernames and addresses, and clearing one is an act.
"""

from django.db import migrations

from chips.groups import grant


def forwards(apps, schema_editor):
    grant(apps, schema_editor, app_label="axes",
          operators=["view_accessattempt", "delete_accessattempt", "view_accesslog", "view_accessfailurelog"],
          viewers=[])


class Migration(migrations.Migration):
    dependencies = [("chipfarm", "0005_gateway_reality"), ("axes", "0010_accessattemptexpiration")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
