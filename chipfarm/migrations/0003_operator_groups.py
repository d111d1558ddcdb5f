"""Operators edit the pool configuration and run cycles; Viewers only look."""

from django.db import migrations

from chips.groups import grant

VIEW = ["view_poolconfiguration", "view_orchestratoroperation", "view_poolsnapshot", "view_chiprelease"]


def forwards(apps, schema_editor):
    grant(apps, schema_editor, app_label="chipfarm", operators=[*VIEW, "change_poolconfiguration"], viewers=VIEW)
    grant(apps, schema_editor, app_label="chips", operators=["view_notification"], viewers=["view_notification"])


class Migration(migrations.Migration):
    dependencies = [("chipfarm", "0002_pool"), ("chips", "0003_notification")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
