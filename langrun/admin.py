from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from langrun.models import ApiKey, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    pass


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "user", "is_active", "created_at", "last_used_at", "use_count"]
    list_filter = ["is_active"]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "use_count"]
    fields = ["user", "name", "is_active", *readonly_fields]

    def has_add_permission(self, request):
        # Keys are created with `manage.py create_api_key` or the API, which show the secret once.
        return False
