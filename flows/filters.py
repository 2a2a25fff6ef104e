"""Query-string filters for the flow and run lists."""

from datetime import UTC

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField

from flows.models import Flow, FlowRun, FlowSchedule


class UtcDateTimeField(IsoDateTimeField):
    """ISO 8601, turned into UTC here: a database may refuse unusual offsets (PostgreSQL stops at ±15:59),
    and near year 1 or 9999 the conversion itself overflows, which is the caller's error, not a 500."""

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError as exc:
            raise forms.ValidationError("Date and time out of range once converted to UTC.", code="invalid") from exc


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class FlowFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains", help_text="Part of the flow's name (case-insensitive).")
    endpoint_name = django_filters.CharFilter(help_text="The flow's exact endpoint name.")
    search = django_filters.CharFilter(method="filter_search", help_text="Part of the name, description or endpoint name.")

    class Meta:
        model = Flow
        fields = ["name", "endpoint_name", "search"]

    def filter_search(self, queryset, name, value):
        from django.db.models import Q

        return queryset.filter(Q(name__icontains=value) | Q(description__icontains=value) | Q(endpoint_name__icontains=value))


class FlowRunFilter(django_filters.FilterSet):
    flow = django_filters.UUIDFilter(field_name="flow_id", help_text="Only runs of this flow.")
    status = django_filters.ChoiceFilter(choices=FlowRun.Status.choices)
    trigger = django_filters.ChoiceFilter(choices=FlowRun.Trigger.choices)
    received_after = UtcDateTimeFilter(field_name="received_at", lookup_expr="gte", help_text="ISO 8601, inclusive.")
    received_before = UtcDateTimeFilter(field_name="received_at", lookup_expr="lt", help_text="ISO 8601, exclusive.")

    class Meta:
        model = FlowRun
        fields = ["flow", "status", "trigger", "received_after", "received_before"]


class FlowScheduleFilter(django_filters.FilterSet):
    flow = django_filters.UUIDFilter(field_name="flow_id", help_text="Only the schedules of this flow.")

    class Meta:
        model = FlowSchedule
        fields = ["flow"]
