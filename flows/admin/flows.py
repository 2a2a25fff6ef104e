"""The flow admin: diagram, webhook URL, import, "Run now", the latest runs."""

from __future__ import annotations

from contextlib import suppress

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from flows import diagram, engine
from flows.admin.common import (
    API_KEY_PLACEHOLDER,
    LATEST_RUNS,
    AdminMedia,
    SaveRefusalsAsFormErrors,
    copyable_block,
    copyable_input,
    describe_import_issue,
    format_duration,
    is_changelist,
    status_badge,
    webhook_path,
)
from flows.admin.forms import FlowAdminForm, FlowImportForm, RunNowForm
from flows.exceptions import EndpointNameTaken, ScheduleLimitReached
from flows.models import Flow, FlowRun, NodeResult
from flows.services.flows import flow_create, flow_delete, flow_update
from flows.services.imports import flow_import
from flows.services.pause import flow_pause, flow_resume
from flows.services.runs import flow_run_create
from langrun.admin import OwnedModelAdmin
from webhooks.models import IngestToken

# The form's fields a save hands to the services.
FLOW_FORM_SETTINGS = (
    "name",
    "description",
    "endpoint_name",
    "data",
    "methods",
    "verification",
    "dedupe_key",
    "accept_if",
    "handshakes",
    "response",
)
RUN_CONTROL_FIELDS = ("max_concurrent_runs", "concurrency_key", "throttle_limit", "throttle_period", "throttle_key")


class LastStatusFilter(admin.SimpleListFilter):
    title = "last run status"
    parameter_name = "last_status"
    NEVER = "never"

    def lookups(self, request, model_admin):
        return [*FlowRun.Status.choices, (self.NEVER, "never run")]

    def queryset(self, request, queryset):
        value = self.value()
        if value == self.NEVER:
            return queryset.filter(last_status__isnull=True)
        if value in FlowRun.Status.values:
            return queryset.filter(last_status=value)
        return queryset


@admin.register(Flow)
class FlowAdmin(SaveRefusalsAsFormErrors, OwnedModelAdmin):
    form = FlowAdminForm
    save_refusals = (EndpointNameTaken, engine.GraphValidationError, ScheduleLimitReached)
    search_fields = ["name", "endpoint_name"]
    list_per_page = 50
    change_form_template = "admin/flows/flow/change_form.html"
    change_list_template = "admin/flows/flow/change_list.html"
    Media = AdminMedia

    # Lists: one query for the page, whatever the number of runs (annotations, not per-row queries).
    def get_queryset(self, request):
        runs = FlowRun.objects.filter(flow=OuterRef("pk"))
        latest = runs.order_by("-received_at")
        count = runs.order_by().values("flow").annotate(n=Count("*")).values("n")
        qs = super().get_queryset(request).select_related("user")
        if is_changelist(request, self):
            qs = qs.defer("data", "description")
        return qs.annotate(
            run_count=Coalesce(Subquery(count, output_field=IntegerField()), Value(0)),
            last_status=Subquery(latest.values("status")[:1]),
            last_received_at=Subquery(latest.values("received_at")[:1]),
        )

    def get_list_display(self, request):
        def webhook_url(flow):
            url = request.build_absolute_uri(webhook_path(flow))
            return format_html("<code>{}</code>", url)

        webhook_url.short_description = "webhook URL"
        return ["name", "endpoint_name", "owner", webhook_url, "runs", "last_run", "paused"]

    def get_list_filter(self, request):
        return ["user", LastStatusFilter] if request.user.is_superuser else [LastStatusFilter]

    @admin.display(description="runs", ordering="run_count")
    def runs(self, flow):
        url = reverse("admin:flows_flowrun_changelist") + f"?flow={flow.pk}"
        return format_html('<a href="{}">{}</a>', url, flow.run_count)

    @admin.display(description="paused", ordering="paused_at")
    def paused(self, flow):
        return status_badge("paused") if flow.paused_at else ""

    # Pause and resume change the flow, so they need Django's change permission (and only touch the user's own flows).
    actions = ["pause_selected", "resume_selected"]

    @admin.action(description="Pause selected flows (their runs are held)", permissions=["change"])
    def pause_selected(self, request, queryset):
        paused = 0
        for flow in queryset:
            with suppress(Http404):  # deleted since the page listed it: nothing left to pause
                flow_pause(flow=flow)
                paused += 1
        self.message_user(request, f"Paused {paused} flow(s).", messages.SUCCESS)

    @admin.action(description="Resume selected flows (release their held runs)", permissions=["change"])
    def resume_selected(self, request, queryset):
        resumed = released = 0
        for flow in queryset:
            with suppress(Http404):  # deleted since the page listed it: nothing left to resume
                released += flow_resume(flow=flow)
                resumed += 1
        self.message_user(request, f"Resumed {resumed} flow(s); {released} held run(s) released.", messages.SUCCESS)

    @admin.display(description="last run", ordering="last_received_at")
    def last_run(self, flow):
        if not flow.last_status:
            return "never run"
        when = date_format(timezone.localtime(flow.last_received_at), "SHORT_DATETIME_FORMAT")
        return format_html('{}<p class="lr-hint">{}</p>', status_badge(flow.last_status), when)

    # Change page.
    def get_fieldsets(self, request, obj=None):
        main = ["name", "user", "endpoint_name", "description"] if request.user.is_superuser else ["name", "endpoint_name", "description"]
        if obj is None:
            return [(None, {"fields": main}), ("Webhook", {"fields": ["methods", "response"]}), ("Graph", {"fields": ["data"]})]
        return [
            (None, {"fields": main}),
            (
                "Webhook",
                {
                    "fields": [
                        "webhook_url",
                        "curl_example",
                        "ingest_tokens",
                        "methods",
                        "verification",
                        "dedupe_key",
                        "accept_if",
                        "handshakes",
                        "response",
                    ]
                },
            ),
            (
                "Run control",
                {"fields": [("max_concurrent_runs", "concurrency_key"), ("throttle_limit", "throttle_period", "throttle_key")]},
            ),
            ("Graph", {"fields": ["diagram", "data"]}),
            ("Latest runs", {"fields": ["latest_runs"]}),
            ("Details", {"fields": ["id", "paused_at", "created_at", "updated_at"], "classes": ["collapse"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["webhook_url", "curl_example", "ingest_tokens", "diagram", "latest_runs", "id", "paused_at", "created_at", "updated_at"]

    # Through the service the API uses: the runs go first, in short transactions of their own (in one transaction
    # with the flow, a busy flow's runs held SQLite's only write lock for seconds).
    def delete_model(self, request, obj):
        flow_delete(flow=obj)

    def delete_queryset(self, request, queryset):
        for flow in queryset:
            flow_delete(flow=flow)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user" and not request.user.is_superuser:
            kwargs["queryset"] = type(request.user).objects.filter(pk=request.user.pk)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        obj.absolute_webhook_url = request.build_absolute_uri(webhook_path(obj))
        return obj

    @admin.display(description="webhook URL")
    def webhook_url(self, flow):
        return copyable_input("lr-webhook-url", flow.absolute_webhook_url)

    @admin.display(description="curl")
    def curl_example(self, flow):
        command = (
            f"curl -X POST '{flow.absolute_webhook_url}' \\\n"
            f"  -H 'x-api-key: {API_KEY_PLACEHOLDER}' \\\n"
            "  -H 'Content-Type: application/json' \\\n"
            """  -d '{"key": "value"}'"""
        )
        help_text = format_html(
            '<p class="lr-hint">Replace {} with one of your <a href="{}">API keys</a>.</p>',
            API_KEY_PLACEHOLDER,
            reverse("admin:langrun_apikey_changelist"),
        )
        return copyable_block("lr-curl", command) + help_text

    @admin.display(description="ingest tokens")
    def ingest_tokens(self, flow):
        tokens = list(IngestToken.objects.filter(flow=flow).order_by("-created_at"))
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:webhooks_ingesttoken_change", args=[token.pk]),
                    token.name or "(no name)",
                    token.masked,
                    token.state,
                    token.expires_at.strftime("%Y-%m-%d %H:%M") if token.expires_at else "never",
                    token.last_used_at.strftime("%Y-%m-%d %H:%M:%S") if token.last_used_at else "never",
                )
                for token in tokens
            ),
        )
        table = (
            format_html(
                '<table class="lr-table"><thead><tr><th>name</th><th>token</th><th>state</th><th>expires</th><th>last used</th>'
                "</tr></thead><tbody>{}</tbody></table>",
                rows,
            )
            if tokens
            else "No ingest tokens."
        )
        add_url = reverse("admin:webhooks_ingesttoken_add") + f"?flow={flow.pk}"
        list_url = reverse("admin:webhooks_ingesttoken_changelist") + f"?flow__id__exact={flow.pk}"
        return format_html(
            '{}<p><a href="{}">Add an ingest token</a> · <a href="{}">Revoke tokens</a></p>'
            '<p class="lr-hint">A token authorises only this flow\'s webhook, as x-api-key or in a URL of its own.</p>',
            table,
            add_url,
            list_url,
        )

    @admin.display(description="diagram")
    def diagram(self, flow):
        try:
            graph = engine.parse_graph(flow.data)
        except engine.GraphValidationError as exc:
            return format_html('<p class="errornote">The saved graph is invalid: {}</p>', str(exc))
        return format_html('<div class="lr-diagram-wrap">{}</div>', mark_safe(diagram.render_svg(graph)))  # noqa: S308 - escaped by render_svg

    @admin.display(description="latest runs")
    def latest_runs(self, flow):
        runs = list(flow.runs.order_by("-received_at")[:LATEST_RUNS])
        if not runs:
            return "No runs yet."
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:flows_flowrun_change", args=[run.pk]),
                    str(run.pk)[:8],
                    status_badge(run.status),
                    run.trigger,
                    run.received_at.strftime("%Y-%m-%d %H:%M:%S"),
                    format_duration(run.duration_ms),
                )
                for run in runs
            ),
        )
        all_url = reverse("admin:flows_flowrun_changelist") + f"?flow={flow.pk}"
        return format_html(
            '<table class="lr-table lr-latest-runs"><thead><tr><th>run</th><th>status</th><th>trigger</th><th>received</th>'
            '<th>duration</th></tr></thead><tbody>{}</tbody></table><p><a href="{}">All runs of this flow</a></p>',
            rows,
            all_url,
        )

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in (*FLOW_FORM_SETTINGS, *RUN_CONTROL_FIELDS) if name in form.cleaned_data}
        if change:
            if "user" in form.cleaned_data:
                fields["user"] = form.cleaned_data["user"]
            flow_update(flow=obj, **fields)
        else:
            created = flow_create(user=form.cleaned_data.get("user") or request.user, **fields)
            obj.__dict__.update(created.__dict__)

    def get_deleted_objects(self, objs, request):
        # Django would list every run and node result on the confirmation page: far too many for a busy flow.
        flows = list(objs)
        runs = FlowRun.objects.filter(flow__in=flows)
        nodes = NodeResult.objects.filter(run__flow__in=flows)
        summary = [format_html("{} (with its runs and their node results)", flow) for flow in flows]
        counts = {"flows": len(flows), "flow runs": runs.count(), "node results": nodes.count()}
        return summary, counts, set(), []

    # "Run now": a test payload through the same service as the webhook.
    def get_urls(self):
        run_now = self.admin_site.admin_view(self.run_now_view)
        import_flows = self.admin_site.admin_view(self.import_view)
        return [
            path("import/", import_flows, name="flows_flow_import"),
            path("<path:object_id>/run/", run_now, name="flows_flow_run"),
            *super().get_urls(),
        ]

    # "Import Langflow flow": the same service as the API's upload endpoint.
    def import_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = FlowImportForm(request.POST, request.FILES, request_user=request.user)
            if form.is_valid():
                document = form.cleaned_data["file"]
                try:
                    flows = flow_import(user=form.cleaned_data.get("user") or request.user, document=document)
                except engine.GraphValidationError as exc:
                    form.add_error(None, [describe_import_issue(issue, document) for issue in exc.issues])
                except EndpointNameTaken as exc:
                    form.add_error(
                        None, f"The endpoint name {exc.endpoint_name} was taken by another flow during the import; import the file again."
                    )
                else:
                    return self._imported(request, flows)
        else:
            form = FlowImportForm(request_user=request.user)
        return self.admin_page(
            request, "admin/flows/flow/import.html", title="Import Langflow flow", form=form, media=self.media + form.media
        )

    def _imported(self, request, flows: list[Flow]):
        links = format_html_join(
            ", ",
            '<a href="{}">{}</a> ({})',
            (
                (
                    reverse("admin:flows_flow_change", args=[f.pk]),
                    f.name,
                    f"endpoint {f.endpoint_name}" if f.endpoint_name else "no endpoint name",
                )
                for f in flows
            ),
        )
        self.message_user(request, format_html("Imported {} flow(s): {}.", len(flows), links), messages.SUCCESS)
        if len(flows) == 1:
            return HttpResponseRedirect(reverse("admin:flows_flow_change", args=[flows[0].pk]))
        return HttpResponseRedirect(reverse("admin:flows_flow_changelist"))

    def run_now_view(self, request, object_id):
        flow = self.get_object(request, object_id)
        if not self.has_change_permission(request, flow):
            raise PermissionDenied
        if request.method == "POST":
            form = RunNowForm(request.POST)
            if form.is_valid():
                run = flow_run_create(
                    flow=flow,
                    user=flow.user,
                    trigger=FlowRun.Trigger.ADMIN,
                    payload=form.cleaned_data["payload"],
                    body=form.data["payload"],
                    content_type="application/json",
                )
                run_url = reverse("admin:flows_flowrun_change", args=[run.pk])
                self.message_user(
                    request, format_html('Run <a href="{}">{}</a> started. <a href="{}">Open the run</a>.', run_url, run.pk, run_url)
                )
                return HttpResponseRedirect(reverse("admin:flows_flow_change", args=[flow.pk]))
        else:
            last = flow.runs.order_by("-received_at").values_list("payload", flat=True).first()
            form = RunNowForm(initial={"payload": last if last is not None else {}})
        return self.admin_page(
            request, "admin/flows/flow/run_now.html", original=flow, title=f"Run {flow.name}", form=form, media=self.media
        )
