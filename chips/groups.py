"""The two operator groups, and a helper later migrations use to grant their models' permissions."""

from __future__ import annotations

OPERATORS = "Operators"
VIEWERS = "Viewers"


def grant(apps, schema_editor, *, app_label: str, operators: list[str], viewers: list[str]) -> None:
    """Give each group the named permissions of one app (codenames), creating what is missing.

    Permissions are normally created after all migrations ran (post_migrate); a data migration that
    assigns them must create them first.
    """
    from django.contrib.auth.management import create_permissions

    app_config = apps.get_app_config(app_label)
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group_name, codenames in ((OPERATORS, operators), (VIEWERS, viewers)):
        group, _ = Group.objects.get_or_create(name=group_name)
        perms = Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
        missing = set(codenames) - set(perms.values_list("codename", flat=True))
        if missing:
            raise RuntimeError(f"permissions not found for {app_label}: {sorted(missing)}")
        group.permissions.add(*perms)
