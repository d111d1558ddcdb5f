"""The third-party screens, held to the project's admin rules (chips.admin's docstring): django-celery-beat's
periodic tasks and django-axes' login attempts are re-registered with subclasses.

- Periodic tasks: the schedule lives in code (config/celery.py; the database scheduler syncs it), the admin pauses
  and inspects. django-celery-beat's actions (enable, disable, toggle, run) ask for no permission, so a Viewer could
  post them: here each needs the change permission. Nobody adds a task from the admin (it would exist only in the
  database); only superusers delete one (an obsolete row; a task still in code comes back at the next beat start).
- Login attempts: operators clear a lockout with "Unlock", not with "Delete selected"; only superusers delete.
- Users and groups: Django stores permission names in English at migrate time; the permission lists show them in
  the reader's language (the default ones rebuilt from the model's verbose name, ours through the catalogue).
"""

from __future__ import annotations

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, Permission
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django_celery_beat.admin import PeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask

from chips.admin import NoDeleteMixin, SuperuserDeleteMixin


class PoolPeriodicTaskAdmin(SuperuserDeleteMixin, PeriodicTaskAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description=PeriodicTaskAdmin.enable_tasks.short_description, permissions=["change"])
    def enable_tasks(self, request, queryset):
        return super().enable_tasks(request, queryset)

    @admin.action(description=PeriodicTaskAdmin.disable_tasks.short_description, permissions=["change"])
    def disable_tasks(self, request, queryset):
        return super().disable_tasks(request, queryset)

    @admin.action(description=PeriodicTaskAdmin.toggle_tasks.short_description, permissions=["change"])
    def toggle_tasks(self, request, queryset):
        return super().toggle_tasks(request, queryset)

    @admin.action(description=PeriodicTaskAdmin.run_tasks.short_description, permissions=["change"])
    def run_tasks(self, request, queryset):
        return super().run_tasks(request, queryset)


class PoolAccessAttemptAdmin(SuperuserDeleteMixin, AccessAttemptAdmin):
    actions = ["unlock", "cleanup_expired_attempts"]

    def has_unlock_permission(self, request) -> bool:
        # The permission the Operators group holds for this (chipfarm migration 0006).
        return request.user.has_perm("axes.delete_accessattempt")

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # what the login form recorded: shown, never edited

    @admin.action(description=_("Unlock: forget the selected failed logins"), permissions=["unlock"])
    def unlock(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        count, _by_model = queryset.delete()
        self.message_user(request, ngettext("%(count)d lock cleared.", "%(count)d locks cleared.", count)
                          % {"count": count}, messages.SUCCESS)

    @admin.action(description=AccessAttemptAdmin.cleanup_expired_attempts.short_description, permissions=["unlock"])
    def cleanup_expired_attempts(self, request, queryset):
        return super().cleanup_expired_attempts(request, queryset)


class PoolAccessLogAdmin(NoDeleteMixin, AccessLogAdmin):
    def has_change_permission(self, request, obj=None) -> bool:
        return False


class PoolAccessFailureLogAdmin(NoDeleteMixin, AccessFailureLogAdmin):
    def has_change_permission(self, request, obj=None) -> bool:
        return False


DEFAULT_PERMISSIONS = {"add": _("Can add %(model)s"), "change": _("Can change %(model)s"),
                       "delete": _("Can delete %(model)s"), "view": _("Can view %(model)s")}


def permission_label(permission: Permission) -> str:
    """"app | model | what it allows", in the reader's language."""
    action, _sep, model_name = permission.codename.partition("_")
    model = permission.content_type.model_class()
    if action in DEFAULT_PERMISSIONS and model is not None and model_name == model._meta.model_name:
        name = DEFAULT_PERMISSIONS[action] % {"model": model._meta.verbose_name}
    else:
        name = gettext(permission.name)
    return f"{permission.content_type} | {name}"


class TranslatedPermissionsMixin:
    def formfield_for_manytomany(self, db_field, request, **kwargs):
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        if field is not None and db_field.name in ("permissions", "user_permissions"):
            field.label_from_instance = permission_label
        return field


class PoolGroupAdmin(TranslatedPermissionsMixin, GroupAdmin):
    pass


class PoolUserAdmin(TranslatedPermissionsMixin, UserAdmin):
    pass


for model, model_admin in [(PeriodicTask, PoolPeriodicTaskAdmin), (AccessAttempt, PoolAccessAttemptAdmin),
                           (AccessLog, PoolAccessLogAdmin), (AccessFailureLog, PoolAccessFailureLogAdmin),
                           (Group, PoolGroupAdmin), (get_user_model(), PoolUserAdmin)]:
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
