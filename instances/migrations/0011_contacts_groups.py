"""Operators keep the opt-out list and its rules; both groups see inbound messages and opt-outs."""

from django.db import migrations

from chips.groups import grant

VIEW = ["view_inboundmessage", "view_contactsuppression", "view_optoutrule"]


def forwards(apps, schema_editor):
    grant(apps, schema_editor, app_label="instances",
          operators=[*VIEW, "add_contactsuppression", "change_contactsuppression", "add_optoutrule",
                     "change_optoutrule"], viewers=VIEW)


class Migration(migrations.Migration):
    dependencies = [("instances", "0010_binding_origin_inbound")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
