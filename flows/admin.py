from django import forms
from django.contrib import admin

from flows.models import Flow, FlowRun, NodeResult, Variable


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


class VariableAdminForm(forms.ModelForm):
    """The stored value is never put in the form: a new value replaces it, an empty field keeps it."""

    new_value = forms.CharField(
        label="Value",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Credentials are encrypted and never shown again; leave empty to keep the current value.",
    )

    class Meta:
        model = Variable
        fields = ["user", "name", "kind"]


@admin.register(Variable)
class VariableAdmin(admin.ModelAdmin):
    form = VariableAdminForm
    list_display = ["name", "kind", "user", "updated_at"]
    list_filter = ["kind"]
    search_fields = ["name"]

    def save_model(self, request, obj, form, change):
        from flows import services

        value = form.cleaned_data.get("new_value")
        if change:
            original = Variable.objects.get(pk=obj.pk)
            services.variable_update(variable=original, name=obj.name, kind=obj.kind, value=value or None)
        else:
            created = services.variable_create(user=obj.user, name=obj.name, kind=obj.kind, value=value or "")
            obj.pk = created.pk
