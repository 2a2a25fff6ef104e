"""Query-string filters for the flow and run lists."""

import django_filters

from flows.models import Flow, FlowRun


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
    received_after = django_filters.IsoDateTimeFilter(field_name="received_at", lookup_expr="gte", help_text="ISO 8601, inclusive.")
    received_before = django_filters.IsoDateTimeFilter(field_name="received_at", lookup_expr="lt", help_text="ISO 8601, exclusive.")

    class Meta:
        model = FlowRun
        fields = ["flow", "status", "trigger", "received_after", "received_before"]
