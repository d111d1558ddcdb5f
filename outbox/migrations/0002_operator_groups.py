"""Operators manage endpoints and replay deliveries; Viewers only look.

The same steps as chips.groups.grant, written here because the outbox imports no other app (not even in its
migrations): permissions are created first (they normally appear after all migrations ran).
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW = ["view_endpoint", "view_event", "view_delivery", "view_deliveryattempt"]
OPERATE = [*VIEW, "add_endpoint", "change_endpoint", "delete_endpoint", "replay_delivery"]


def forwards(apps, schema_editor):
    app_config = apps.get_app_config("outbox")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in (("Operators", OPERATE), ("Viewers", VIEW)):
        group, _ = Group.objects.get_or_create(name=name)
        perms = Permission.objects.filter(content_type__app_label="outbox", codename__in=codenames)
        missing = set(codenames) - set(perms.values_list("codename", flat=True))
        if missing:
            raise RuntimeError(f"permissions not found for outbox: {sorted(missing)}")
        group.permissions.add(*perms)


class Migration(migrations.Migration):
    dependencies = [("outbox", "0001_initial"), ("auth", "0012_alter_user_first_name_max_length"),
                    ("contenttypes", "0002_remove_content_type_name")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
