"""Admin for flow versions: a read-only history per flow and a diff between any two versions."""

import json

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from flows.admin.common import RelatedFlowsFilter, is_changelist
from flows.admin.diff import json_diff
from flows.models import Flow, FlowVersion
from langrun.admin import OwnedModelAdmin


def version_diff(old: FlowVersion | None, new: FlowVersion) -> str:
    """A unified diff of two versions' graphs as pretty JSON (empty when they are equal)."""
    return "\n".join(json_diff(old.data if old else None, new.data, f"v{old.number}" if old else "(nothing)", f"v{new.number}"))


def _line_class(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "file"
    return {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "")


@admin.register(FlowVersion)
class FlowVersionAdmin(OwnedModelAdmin):
    """Read-only: versions are recorded by the flow services. Staff see their own flows' versions, with `view_flowversion`."""

    owner_field = "flow__user"
    list_display = ["flow", "number", "author", "created_at", "message", "diff_link"]
    list_filter = [("flow", RelatedFlowsFilter)]  # only the flows whose versions the user may see
    list_select_related = ["flow", "author"]
    search_fields = ["flow__name", "message"]
    readonly_fields = ["flow", "number", "author", "created_at", "message", "pretty_data", "diff_with_previous"]
    fields = readonly_fields

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if is_changelist(request, self):
            # Graphs may be up to LANGRUN_MAX_BODY_BYTES each; a page of versions shows none of them, nor their flows'.
            qs = qs.defer("data", "flow__data", "flow__description")
        return qs

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        compare = self.admin_site.admin_view(self.compare_view)
        return [path("compare/<uuid:flow_id>/", compare, name="flows_flowversion_compare"), *super().get_urls()]

    @admin.display(description="diff")
    def diff_link(self, obj: FlowVersion) -> str:
        url = reverse("admin:flows_flowversion_compare", args=[obj.flow_id])
        return format_html('<a href="{}?a={}&amp;b={}">with previous</a>', url, max(obj.number - 1, 1), obj.number)

    @admin.display(description="graph")
    def pretty_data(self, obj: FlowVersion) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.data, indent=2, sort_keys=True))

    @admin.display(description="changes since the previous version")
    def diff_with_previous(self, obj: FlowVersion) -> str:
        previous = FlowVersion.objects.filter(flow=obj.flow_id, number__lt=obj.number).order_by("-number").first()
        return format_html("<pre>{}</pre>", version_diff(previous, obj) or "(no change)")

    def compare_view(self, request, flow_id):
        """Two versions of one flow side by side as a diff: `?a=1&b=3` (default: the last two)."""
        flows = Flow.objects.all() if request.user.is_superuser else Flow.objects.filter(user=request.user)
        flow = get_object_or_404(flows, pk=flow_id)  # another user's flow is indistinguishable from none
        if not self.has_view_permission(request):
            raise PermissionDenied
        # Only the two compared graphs are read (each deferred graph loads when its diff needs it).
        versions = list(FlowVersion.objects.filter(flow=flow).select_related("author").defer("data").order_by("-number"))

        def pick(key: str, default: FlowVersion | None) -> FlowVersion | None:
            try:
                number = int(request.GET.get(key, ""))
            except ValueError:
                return default
            return next((v for v in versions if v.number == number), default)

        b = pick("b", versions[0] if versions else None)
        a = pick("a", versions[1] if len(versions) > 1 else b)
        return self.admin_page(
            request,
            "admin/flows/flowversion/compare.html",
            title=f"History of {flow}",
            flow=flow,
            versions=versions,
            a=a,
            b=b,
            diff_lines=[(_line_class(line), line) for line in (version_diff(a, b) if b else "").splitlines()],
        )
