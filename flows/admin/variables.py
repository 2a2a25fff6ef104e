"""The variable admin: values are write-only, saving goes through the variable services."""

from __future__ import annotations

from django.contrib import admin

from flows.admin.common import SaveRefusalsAsFormErrors
from flows.admin.forms import VariableAdminForm
from flows.exceptions import VariableNameTaken, VariableValueRequired
from flows.models import Variable
from flows.services.variables import variable_create, variable_update
from langrun.admin import OwnedModelAdmin


@admin.register(Variable)
class VariableAdmin(SaveRefusalsAsFormErrors, OwnedModelAdmin):
    """Per-user variables; values are write-only here, and saving goes through the variable services."""

    form = VariableAdminForm
    # A concurrent save took the name, or a credential made generic came without its new value.
    save_refusals = (VariableNameTaken, VariableValueRequired)
    list_display = ["name", "kind", "user", "updated_at"]
    search_fields = ["name"]
    list_select_related = ["user"]

    def get_list_filter(self, request):
        return ["kind", "user"] if request.user.is_superuser else ["kind"]

    def get_fields(self, request, obj=None):
        owner = ["user"] if request.user.is_superuser else []
        return [*owner, "name", "kind", "new_value"]

    def save_model(self, request, obj, form, change):
        value = form.cleaned_data.get("new_value")
        if change:
            original = Variable.objects.get(pk=obj.pk)
            if "user" in form.cleaned_data:  # a superuser may hand the variable to another user
                original.user = form.cleaned_data["user"]
            variable_update(variable=original, name=obj.name, kind=obj.kind, value=value or None)
        else:
            owner = form.cleaned_data.get("user") or request.user
            created = variable_create(user=owner, name=obj.name, kind=obj.kind, value=value or "")
            obj.pk = created.pk
