"""The schedule admin: a flow on a clock; saving goes through the schedule services (which keep django-q2's row in step)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect

from flows.admin.common import OwnFlowChoices
from flows.admin.forms import PrettyJSONField
from flows.exceptions import ScheduleInvalid, ScheduleLimitReached
from flows.models import FlowSchedule
from flows.services.schedules import flow_schedule_check, flow_schedule_create, flow_schedule_room_check, flow_schedule_update
from langrun.admin import OwnedModelAdmin


class FlowScheduleAdminForm(forms.ModelForm):
    payload = PrettyJSONField(required=False, help_text="The JSON object the Webhook node receives on each run.")

    class Meta:
        model = FlowSchedule
        fields = ["flow", "name", "cron", "interval_minutes", "payload"]

    def clean_payload(self):
        payload = self.cleaned_data.get("payload")
        if payload in (None, ""):
            return {}
        if not isinstance(payload, dict):
            raise forms.ValidationError("Give a JSON object.")
        return payload

    def clean(self):
        data = super().clean()
        try:
            flow_schedule_check(cron=(data.get("cron") or "").strip(), interval_minutes=data.get("interval_minutes"))
        except ScheduleInvalid as exc:
            field = exc.errors[0]["loc"][1] if len(exc.errors[0]["loc"]) > 1 else None
            self.add_error(field, str(exc))
        if self.instance._state.adding and data.get("flow") is not None:
            try:
                flow_schedule_room_check(user_id=data["flow"].user_id)
            except ScheduleLimitReached as exc:
                self.add_error(None, str(exc))
        return data


@admin.register(FlowSchedule)
class FlowScheduleAdmin(OwnFlowChoices, OwnedModelAdmin):
    """Schedules of the user's flows, with when each fires next."""

    owner_field = "flow__user"
    form = FlowScheduleAdminForm
    list_display = ["__str__", "flow", "cron", "interval_minutes", "next_run_at", "created_at"]
    list_select_related = ["flow", "q_schedule"]
    readonly_fields = ["next_run_at"]

    @admin.display(description="next run")
    def next_run_at(self, schedule):
        return schedule.q_schedule.next_run if schedule.q_schedule_id else "–"

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # The account's last place taken since the form checked it (an API call meanwhile): the save is refused.
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ScheduleLimitReached as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data.get(name) for name in ("name", "cron", "interval_minutes", "payload")}
        fields["cron"] = (fields["cron"] or "").strip()
        if change:
            if fields["cron"]:
                fields["interval_minutes"] = None
            saved = flow_schedule_update(schedule=FlowSchedule.objects.get(pk=obj.pk), **fields)
        else:
            saved = flow_schedule_create(flow=form.cleaned_data["flow"], **fields)
        obj.pk = saved.pk
