"""The planner used to copy each warming chip's phase volumes into its capacity row, where they stayed after
promotion (a production chip stuck at its last phase's caps). The caps of a warming chip now come from its
phase plan when asked (instances.caps); this clears the copies the planner left, so the rows hold only what
an operator typed. A copy is recognised by its shape: both message caps set to a phase's volume and its
hourly share, and no new-contacts override (the planner never wrote one).
"""

from django.db import migrations
from django.db.models import Q


def forwards(apps, schema_editor):
    PhasePlan = apps.get_model("warmer", "PhasePlan")
    ChipCapacity = apps.get_model("instances", "ChipCapacity")
    copies = Q(pk__in=[])
    for per_day in PhasePlan.objects.values_list("messages_per_day", flat=True):
        copies |= Q(max_per_day=per_day, max_per_hour=max(1, -(-per_day // 6)))
    ChipCapacity.objects.filter(copies, max_new_contacts_per_day__isnull=True).update(max_per_day=None,
                                                                                        max_per_hour=None)


class Migration(migrations.Migration):
    dependencies = [
        ("warmer", "0003_verbose_names"),
        ("instances", "0008_caps_overrides_production_only_binding_ttl_setting"),
    ]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
