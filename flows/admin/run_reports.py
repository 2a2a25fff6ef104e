"""What the runs list adds to a list: the trend chart, a search by run id, flow name or error text, and exports of
the selected runs (actions) or of the whole filtered list (a link that keeps the list's filters)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseBadRequest
from django.urls import path, reverse

from flows.admin.charts import trend_panel
from flows.admin.exports import FORMATS, runs_export_response
from flows.services.reports import RANGES, flow_run_trend, flow_runs_search

TREND_PARAM = "trends"
EXPORT_PARAM = "format"


def _without(request, *names: str):
    """The request's query without `names`: the changelist takes every other parameter for a filter."""
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query


def _with(query, name: str, value: str) -> str:
    """`query` with `name` set to `value`, URL-encoded."""
    query = query.copy()
    query[name] = value
    return query.urlencode()


class RunReportsMixin:
    """For FlowRunAdmin: its list's chart, search and exports (owner scoping comes from get_queryset)."""

    date_hierarchy = "received_at"
    search_fields = ["flow__name", "error"]  # the search itself is flow_runs_search; this turns the box on
    search_help_text = "A run's id (or its first characters), a flow's name or text of an error."
    report_actions = ["export_csv", "export_json"]

    def get_search_results(self, request, queryset, search_term):
        return flow_runs_search(runs=queryset, term=search_term), False

    @admin.action(description="Export selected runs as CSV", permissions=["view"])
    def export_csv(self, request, queryset):
        return runs_export_response(queryset, "csv")

    @admin.action(description="Export selected runs as JSON", permissions=["view"])
    def export_json(self, request, queryset):
        return runs_export_response(queryset, "json")

    def report_urls(self):
        return [path("export/", self.admin_site.admin_view(self.export_view), name="flows_flowrun_export")]

    def export_view(self, request):
        """The list as it is filtered, searched and narrowed by date on the page, in `?format=csv|json`."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        fmt = request.GET.get(EXPORT_PARAM)
        if fmt not in FORMATS:
            return HttpResponseBadRequest("format must be csv or json")
        request.GET = _without(request, EXPORT_PARAM, TREND_PARAM)
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("Unknown filter.")
        return runs_export_response(changelist.get_queryset(request), fmt)

    def report_context(self, request) -> dict:
        chosen = request.GET.get(TREND_PARAM)
        chosen = chosen if chosen in RANGES else "24h"
        request.GET = _without(request, TREND_PARAM)
        switch = {name: "?" + _with(request.GET, TREND_PARAM, name) for name in RANGES}
        exports = {fmt: reverse("admin:flows_flowrun_export") + "?" + _with(request.GET, EXPORT_PARAM, fmt) for fmt in FORMATS}

        def panel():  # the template calls it: an action's POST, answered with a file, never counts the runs
            return trend_panel(flow_run_trend(user=request.user, span=chosen), switch_urls=switch)

        return {"lr_trend": panel, "lr_exports": exports}
