"""The default warming ramp (about 21 days) and the operator groups' permissions on warming data."""

from django.db import migrations

from chips.groups import grant
from warmer.plans import ensure_default_plans

VIEW = ["view_phaseplan", "view_warmingaction", "view_chipdailymetrics", "view_trustbreakdown", "view_warmingday"]


def forwards(apps, schema_editor):
    ensure_default_plans(apps.get_model("warmer", "PhasePlan"))
    grant(apps, schema_editor, app_label="warmer", operators=[*VIEW, "change_phaseplan"], viewers=VIEW)


class Migration(migrations.Migration):
    dependencies = [("warmer", "0001_initial"), ("chips", "0002_operator_groups")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
