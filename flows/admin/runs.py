"""The run admin: a run's details and node results, replay and cancel (the list's chart, search and exports: run_reports)."""

from __future__ import annotations

from contextlib import contextmanager

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from flows import diagram, engine
from flows.admin.common import (
    RUN_LARGE_FIELDS,
    AdminMedia,
    StatusBadgeColumn,
    format_duration,
    is_changelist,
    pretty_json,
    preview,
    status_badge,
)
from flows.admin.run_reports import RunReportsMixin
from flows.exceptions import FlowsError, RunNotCancellable
from flows.models import Flow, FlowRun
from flows.services.pause import flow_run_waiting
from flows.services.replays import replay_job_create
from flows.services.runs import flow_run_cancel, flow_run_replay
from flows.services.versions import flow_run_graph_data
from langrun.admin import OwnedModelAdmin


class FlowFilter(admin.SimpleListFilter):
    """Flows by name, scoped to the user's own (RelatedFieldListFilter would list everyone's)."""

    title = "flow"
    parameter_name = "flow"

    def lookups(self, request, model_admin):
        flows = Flow.objects.order_by("name")
        if not request.user.is_superuser:
            flows = flows.filter(user=request.user)
        return [(str(pk), name) for pk, name in flows.values_list("pk", "name")]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            return queryset.filter(flow_id=self.value())
        except ValidationError as exc:  # not a flow id: the list's "?e=1", as Django's own filters answer
            raise IncorrectLookupParameters(exc) from exc


@admin.register(FlowRun)
class FlowRunAdmin(StatusBadgeColumn, RunReportsMixin, OwnedModelAdmin):
    owner_field = "flow__user"
    list_display = ["short_id", "flow", "trigger", "status_badge", "received_at", "duration", "attempts"]
    list_display_links = ["short_id"]
    list_filter = ["status", FlowFilter, "trigger", "received_at"]
    list_select_related = ["flow"]
    ordering = ["-received_at"]
    show_full_result_count = False
    list_per_page = 50
    actions = ["replay_selected", "cancel_queued", *RunReportsMixin.report_actions]
    change_list_template = "admin/flows/flowrun/change_list.html"
    change_form_template = "admin/flows/flowrun/change_form.html"
    Media = AdminMedia
    # What happened first (where a run failed), then what was asked, then when.
    fieldsets = [
        (None, {"fields": ["id", "flow_link", "status_badge", "waiting_for", "trigger", "attempts", "duration", "replay_of_link"]}),
        ("Run control", {"fields": ["concurrency_key", "throttle_key"], "classes": ["collapse"]}),
        ("Result", {"fields": ["error", "outputs_display", "node_table", "run_diagram"]}),
        ("Request", {"fields": ["request_display", "payload_display", "tweaks_display", "content_type", "body_display"]}),
        ("Timing", {"fields": ["received_at", "enqueued_at", "started_at", "finished_at"]}),
    ]
    readonly_fields = [
        "id",
        "flow_link",
        "status_badge",
        "waiting_for",
        "concurrency_key",
        "throttle_key",
        "trigger",
        "attempts",
        "replay_of_link",
        "received_at",
        "enqueued_at",
        "started_at",
        "finished_at",
        "duration",
        "request_display",
        "payload_display",
        "tweaks_display",
        "content_type",
        "body_display",
        "outputs_display",
        "error",
        "run_diagram",
        "node_table",
    ]

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if is_changelist(request, self):
            # A page of 50 shows none of its runs' large fields, nor their flows' graphs.
            qs = qs.defer(*RUN_LARGE_FIELDS, "flow__data", "flow__description")
        return qs

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # the ledger is read-only; replay and cancel go through services

    # Replay and cancel, as actions and buttons, need Django's permissions: a replay adds a run, a cancel changes one.
    def has_replay_permission(self, request, obj=None):
        return request.user.has_perm("flows.add_flowrun") and (obj is None or self.owns(request, obj))

    def has_cancel_permission(self, request, obj=None):
        return request.user.has_perm("flows.change_flowrun") and (obj is None or self.owns(request, obj))

    def _requiring(self, permitted, view):
        def checked(request, *args, **kwargs):
            if not permitted(request):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return checked

    @admin.display(description="run", ordering="received_at")
    def short_id(self, run):
        return str(run.pk)[:8]

    @admin.display(description="waiting for")
    def waiting_for(self, run):
        detail = flow_run_waiting(run=run, flow_paused=run.flow.paused_at is not None, flow=run.flow)
        if detail is None:
            return "–"
        extra = ", ".join(f"{name}: {value}" for name, value in detail.items() if name != "reason" and value not in (None, False))
        return f"{detail['reason']} ({extra})" if extra else detail["reason"]

    @admin.display(description="duration")
    def duration(self, run):
        return format_duration(run.duration_ms)

    @admin.display(description="flow")
    def flow_link(self, run):
        return format_html('<a href="{}">{}</a>', reverse("admin:flows_flow_change", args=[run.flow_id]), run.flow.name)

    @admin.display(description="replay of")
    def replay_of_link(self, run):
        if run.replay_of_id is None:
            return "–"
        return format_html('<a href="{}">{}</a>', reverse("admin:flows_flowrun_change", args=[run.replay_of_id]), run.replay_of_id)

    @admin.display(description="request")
    def request_display(self, run):
        # Method, headers (lower-cased) and query, as the Webhook node saw them: secrets were masked before storing.
        return pretty_json(run.request) if run.request else "–"

    @admin.display(description="payload")
    def payload_display(self, run):
        if run.payload is None:
            return format_html('<pre class="lr-json">{}</pre>', run.body) if run.body else "–"
        return pretty_json(run.payload)

    @admin.display(description="raw body")
    def body_display(self, run):
        return format_html('<pre class="lr-json">{}</pre>', run.body) if run.body else "–"

    @admin.display(description="tweaks")
    def tweaks_display(self, run):
        return pretty_json(run.tweaks) if run.tweaks else "–"

    @admin.display(description="outputs")
    def outputs_display(self, run):
        return pretty_json(run.outputs) if run.outputs is not None else "–"

    @admin.display(description="diagram")
    def run_diagram(self, run):
        try:
            graph = engine.parse_graph(engine.apply_tweaks(flow_run_graph_data(run=run), run.tweaks))
        except engine.GraphValidationError:
            return "–"
        statuses = dict(run.node_results.values_list("node_id", "status"))
        return format_html('<div class="lr-diagram-wrap">{}</div>', mark_safe(diagram.render_svg(graph, statuses=statuses)))  # noqa: S308

    @admin.display(description="nodes")
    def node_table(self, run):
        results = list(run.node_results.order_by("order"))
        if not results:
            return "No node results yet."
        rows = format_html_join(
            "",
            '<tr class="lr-node-row" data-node-id="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
            '<td class="lr-preview">{}</td><td>{}</td></tr>',
            (
                (
                    r.node_id,
                    r.node_id,
                    r.component_type,
                    status_badge(r.status),
                    format_duration(r.duration_ms) if r.status != "skipped" else "–",
                    preview(r.output) if r.output is not None else "",
                    r.error,
                )
                for r in results
            ),
        )
        return format_html(
            '<table class="lr-table lr-node-results"><thead><tr><th>node</th><th>component</th><th>status</th><th>duration</th>'
            "<th>output</th><th>error</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    # Actions and buttons: the same services as the API.
    @admin.action(description="Replay selected runs", permissions=["replay"])
    def replay_selected(self, request, queryset):
        # The same path as the API's bulk replay: a background job (one per owner of the selected runs' flows).
        by_owner: dict = {}
        for run_id, owner_id in queryset.values_list("pk", "flow__user"):
            by_owner.setdefault(owner_id, []).append(str(run_id))
        owners = {u.pk: u for u in get_user_model().objects.filter(pk__in=by_owner)}
        for owner_id, ids in by_owner.items():
            job = replay_job_create(user=owners[owner_id], filters={"ids": ids})
            link = reverse("admin:flows_replayjob_change", args=[job.pk])
            self.message_user(
                request,
                format_html('Replaying {} run(s) in the background: <a href="{}">job {}</a>.', job.matched, link, str(job.pk)[:8]),
                messages.SUCCESS,
            )

    @contextmanager
    def flows_errors_as_messages(self, request):
        """A domain error of the services (it carries its own message) becomes an error message on the page."""
        try:
            yield
        except FlowsError as exc:
            self.message_user(request, str(exc), messages.ERROR)

    @admin.action(description="Cancel selected queued or running runs", permissions=["cancel"])
    def cancel_queued(self, request, queryset):
        cancelled = skipped = 0
        for run in queryset:
            try:
                flow_run_cancel(run=run)
                cancelled += 1
            except RunNotCancellable:
                skipped += 1
        self.message_user(request, f"Cancelled {cancelled} run(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} run(s) had finished already and were left as they are.", messages.WARNING)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/replay/",
                self.admin_site.admin_view(self._requiring(self.has_replay_permission, self.replay_view)),
                name="flows_flowrun_replay",
            ),
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self._requiring(self.has_cancel_permission, self.cancel_view)),
                name="flows_flowrun_cancel",
            ),
            *self.report_urls(),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {**self.report_context(request), **(extra_context or {})})

    def replay_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        run = self.get_object(request, object_id)
        with self.flows_errors_as_messages(request):
            new = flow_run_replay(run=run, user=run.user)
            self.message_user(request, format_html("Replay of run {} queued.", str(run.pk)[:8]), messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:flows_flowrun_change", args=[new.pk]))
        return HttpResponseRedirect(reverse("admin:flows_flowrun_change", args=[run.pk]))

    def cancel_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        run = self.get_object(request, object_id)
        with self.flows_errors_as_messages(request):
            flow_run_cancel(run=run)
            self.message_user(request, "Run cancelled.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:flows_flowrun_change", args=[run.pk]))

    def render_change_form(self, request, context, *args, **kwargs):
        obj = context.get("original")
        if obj is not None:
            context["subtitle"] = f"Run {str(obj.pk)[:8]} of {obj.flow.name}"
            context["lr_refresh"] = obj.status not in FlowRun.TERMINAL
            context["lr_replayable"] = self.has_replay_permission(request, obj)
            context["lr_cancellable"] = obj.status in (FlowRun.Status.QUEUED, FlowRun.Status.RUNNING) and self.has_cancel_permission(
                request, obj
            )
        return super().render_change_form(request, context, *args, **kwargs)
