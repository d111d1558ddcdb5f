"""Operators and Viewers see the warming page (the WarmingChip proxy has permissions of its own)."""

from django.db import migrations

from chips.groups import grant


def forwards(apps, schema_editor):
    grant(apps, schema_editor, app_label="warmer", operators=["view_warmingchip"], viewers=["view_warmingchip"])


class Migration(migrations.Migration):
    dependencies = [("warmer", "0004_planner_caps_out_of_capacity_rows"), ("chips", "0002_operator_groups")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
