"""Operators act on chips (transitions, acknowledging alerts); Viewers only look."""

from django.db import migrations

from chips.groups import grant

VIEW = ["view_chip", "view_chiptransition", "view_chipalert"]


def forwards(apps, schema_editor):
    grant(apps, schema_editor, app_label="chips",
          operators=[*VIEW, "change_chip", "run_chip_transitions", "change_chipalert"], viewers=VIEW)
    grant(apps, schema_editor, app_label="django_celery_beat",
          operators=["view_periodictask", "change_periodictask"], viewers=["view_periodictask"])


class Migration(migrations.Migration):
    dependencies = [
        ("chips", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
