from django.contrib import admin

from chipfarm.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "is_active", "last_used_at", "created_at"]
    list_filter = ["is_active"]
    readonly_fields = ["name", "prefix", "last_used_at", "created_at", "updated_at"]
    fields = ["name", "prefix", "is_active", "last_used_at", "created_at", "updated_at"]

    def has_add_permission(self, request) -> bool:
        return False  # keys are issued by `manage.py create_api_key`, which shows the key once
