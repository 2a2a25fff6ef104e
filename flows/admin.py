from django.contrib import admin

from flows.models import Flow, FlowRun, NodeResult


@admin.register(Flow)
class FlowAdmin(admin.ModelAdmin):
    list_display = ["name", "endpoint_name", "user", "updated_at"]
    search_fields = ["name", "endpoint_name"]
    list_filter = ["user"]
    readonly_fields = ["id", "created_at", "updated_at"]


class NodeResultInline(admin.TabularInline):
    model = NodeResult
    extra = 0
    can_delete = False
    readonly_fields = ["order", "node_id", "component_type", "status", "duration_ms", "output", "error"]
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(FlowRun)
class FlowRunAdmin(admin.ModelAdmin):
    list_display = ["id", "flow", "trigger", "status", "received_at", "attempts"]
    list_filter = ["status", "trigger"]
    list_select_related = ["flow"]
    readonly_fields = [f.name for f in FlowRun._meta.fields]
    inlines = [NodeResultInline]

    def has_add_permission(self, request):
        return False
