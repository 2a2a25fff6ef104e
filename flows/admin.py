"""The admin for flows and runs: diagrams, webhook URLs, "Run now", run details, replay and cancel.

Every change goes through flows.services, like the webhook and the API.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from flows import diagram, engine
from flows.exceptions import FlowsError, RunNotCancellable
from flows.models import Flow, FlowRun, NodeResult, Variable
from flows.services.flows import EndpointNameTaken, flow_create, flow_endpoint_name_taken, flow_graph_validate, flow_update
from flows.services.imports import flow_import
from flows.services.runs import flow_run_cancel, flow_run_create, flow_run_replay
from flows.services.variables import VariableNameTaken, VariableUndecryptable, variable_create, variable_update
from flows.services.versions import flow_run_graph_data
from langrun.admin import OwnedModelAdmin

LATEST_RUNS = 10
PREVIEW_CHARS = 200
API_KEY_PLACEHOLDER = "<YOUR_API_KEY>"


# --- helpers -----------------------------------------------------------------


def webhook_path(flow: Flow) -> str:
    return reverse("webhook", args=[flow.endpoint_name or flow.id])


def status_badge(status: str) -> str:
    return format_html('<span class="lr-badge lr-badge-{}">{}</span>', status, status)


def format_duration(ms: float | None) -> str:
    if ms is None:
        return "–"
    if ms < 1:
        return "<1 ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.2f} s"


def pretty_json(value: Any) -> str:
    return format_html('<pre class="lr-json">{}</pre>', json.dumps(value, indent=2, ensure_ascii=False, default=str))


def preview(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def describe_issue(issue: engine.ValidationIssue, data: Any) -> str:
    """An engine validation issue with the node (or edge) it concerns named, for a person reading the form."""
    loc = list(issue.loc)
    where = ".".join(map(str, loc)) or "data"
    if len(loc) >= 2 and loc[0] in ("nodes", "edges") and isinstance(loc[1], int):
        items = data.get(loc[0]) if isinstance(data, dict) else None
        item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
        item = item if isinstance(item, dict) else {}
        if loc[0] == "nodes":
            node_id = item.get("id")
            subject = f"Node {node_id!r}" if isinstance(node_id, str) and node_id else f"Node #{loc[1]}"
        else:
            subject = f"Edge #{loc[1]} ({item.get('source', '?')} → {item.get('target', '?')})"
        rest = ".".join(map(str, loc[2:]))
        where = f"{subject}, {rest}" if rest else subject
    return f"{where}: {issue.msg}"


def _graph_of_import_issues(doc: Any) -> Any:
    """The graph an import issue's `data.…` location points into: the Langflow export's own `data` when it could
    not be converted, else the converted native graph (whose node list may differ, e.g. without canvas notes)."""
    from flows.importers import ImportProblem, is_langflow_flow, langflow_to_native

    if is_langflow_flow(doc):
        try:
            return langflow_to_native(doc)["data"]
        except ImportProblem:
            pass
    return doc.get("data")


def describe_import_issue(issue: engine.ValidationIssue, document: Any) -> str:
    """An issue raised by flow_import, with the flow and the node or edge it concerns named."""
    loc, doc, subject = list(issue.loc), document, ""
    if len(loc) >= 2 and loc[0] == "flows" and isinstance(loc[1], int) and isinstance(document, dict):
        flows = document.get("flows") or []
        doc = flows[loc[1]] if loc[1] < len(flows) else None
        name = doc.get("name") if isinstance(doc, dict) else None
        subject = f"Flow {loc[1] + 1}" + (f" ({name!r})" if isinstance(name, str) and name else "")
        loc = loc[2:]
    if issue.type == "unsupported_component":
        text = issue.msg  # already names the node by id and type
    elif loc and loc[0] == "data" and isinstance(doc, dict):
        text = describe_issue(engine.ValidationIssue(tuple(loc[1:]), issue.msg, issue.type), _graph_of_import_issues(doc))
    else:
        text = f"{'.'.join(map(str, loc))}: {issue.msg}" if loc else issue.msg
    return f"{subject}: {text}" if subject else text


def _is_changelist(request, model_admin) -> bool:
    match = request.resolver_match
    return match is not None and match.url_name == f"{model_admin.opts.app_label}_{model_admin.opts.model_name}_changelist"


def copyable_input(element_id: str, value: str) -> str:
    """A one-line value with a copy button (flows/admin.js)."""
    return format_html(
        '<div class="lr-copy"><input id="{}" type="text" readonly value="{}" size="60">'
        '<button type="button" class="button" data-lr-copy="{}">Copy</button></div>',
        element_id,
        value,
        element_id,
    )


def copyable_block(element_id: str, value: str) -> str:
    return format_html(
        '<div class="lr-copy"><pre id="{}">{}</pre><button type="button" class="button" data-lr-copy="{}">Copy</button></div>',
        element_id,
        value,
        element_id,
    )


class AdminMedia:
    css = {"all": ["flows/admin.css"]}
    js = ["flows/admin.js"]


class SaveRefusalsAsFormErrors:
    """A service refusing a save the form had accepted (a concurrent save took the name, …) re-renders the form.

    Subclasses list the exceptions in `save_refusals`; the form gets the refusal as `save_refused` and shows it.
    """

    save_refusals: tuple[type[Exception], ...] = ()

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except self.save_refusals as exc:
            if request.method != "POST" or getattr(request, "lr_save_refused", None) is not None:
                raise
            # Django's transaction for the save has been rolled back: validate the same POST again, refusal included.
            request.lr_save_refused = exc
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"request_user": request.user, "save_refused": getattr(request, "lr_save_refused", None)})


# --- flows -------------------------------------------------------------------


class PrettyJSONField(forms.JSONField):
    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


class FlowAdminForm(forms.ModelForm):
    data = PrettyJSONField(
        label="Graph (JSON)",
        widget=forms.Textarea(attrs={"rows": 22, "class": "lr-json-editor", "spellcheck": "false"}),
        help_text='{"nodes": [{"id", "type", "params"}], "edges": [{"source", "target", "source_output", "target_input"}]}',
    )
    request_user = None  # set by SaveRefusalsAsFormErrors.get_form
    save_refused = None  # the service's refusal of this POST's first save (SaveRefusalsAsFormErrors)

    class Meta:
        model = Flow
        fields = ["user", "name", "description", "endpoint_name", "data"]

    def owner(self):
        if "user" in self.fields:
            return self.cleaned_data.get("user")
        if self.instance.user_id:
            return self.instance.user
        return self.request_user

    def clean_data(self):
        data = self.cleaned_data["data"]
        refused = self.save_refused if isinstance(self.save_refused, engine.GraphValidationError) else None
        try:
            flow_graph_validate(data=data, user=self.owner())  # with the owner: its variables must exist
            if refused is not None:
                raise refused
        except engine.GraphValidationError as exc:
            raise forms.ValidationError([describe_issue(issue, data) for issue in exc.issues]) from exc
        return data

    def validate_unique(self):
        # Endpoint names are unique per owner: the service's rule, checked here to show it on the field.
        owner = self.owner()
        endpoint_name = self.cleaned_data.get("endpoint_name") or None
        if isinstance(self.save_refused, EndpointNameTaken):
            self.add_error("endpoint_name", f"The endpoint name {endpoint_name!r} was taken by another flow while saving this one.")
        elif owner is not None and flow_endpoint_name_taken(
            user=owner, endpoint_name=endpoint_name, exclude=self.instance if self.instance.pk else None
        ):
            self.add_error("endpoint_name", f"You already have a flow with the endpoint name {endpoint_name!r}.")


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
    save_refusals = (EndpointNameTaken, engine.GraphValidationError)
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
        if _is_changelist(request, self):
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
        return ["name", "endpoint_name", "owner", webhook_url, "runs", "last_run"]

    def get_list_filter(self, request):
        return ["user", LastStatusFilter] if request.user.is_superuser else [LastStatusFilter]

    @admin.display(description="runs", ordering="run_count")
    def runs(self, flow):
        url = reverse("admin:flows_flowrun_changelist") + f"?flow={flow.pk}"
        return format_html('<a href="{}">{}</a>', url, flow.run_count)

    @admin.display(description="owner", ordering="user__username")
    def owner(self, flow):
        return flow.user

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
            return [(None, {"fields": main}), ("Graph", {"fields": ["data"]})]
        return [
            (None, {"fields": main}),
            ("Webhook", {"fields": ["webhook_url", "curl_example"]}),
            ("Graph", {"fields": ["diagram", "data"]}),
            ("Latest runs", {"fields": ["latest_runs"]}),
            ("Details", {"fields": ["id", "created_at", "updated_at"], "classes": ["collapse"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["webhook_url", "curl_example", "diagram", "latest_runs", "id", "created_at", "updated_at"]

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
        fields = {name: form.cleaned_data[name] for name in ("name", "description", "endpoint_name", "data") if name in form.cleaned_data}
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
                    form.add_error(None, f"The endpoint name {exc} was taken by another flow during the import; import the file again.")
                else:
                    return self._imported(request, flows)
        else:
            form = FlowImportForm(request_user=request.user)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Import Langflow flow",
            "form": form,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/flows/flow/import.html", context)

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
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": flow,
            "title": f"Run {flow.name}",
            "form": form,
            "media": self.media,
        }
        return TemplateResponse(request, "admin/flows/flow/run_now.html", context)


class FlowImportForm(forms.Form):
    file = forms.FileField(
        label="Langflow export",
        help_text='The JSON file from "Export" in Langflow (one flow, or {"flows": [...]}), or a langrun export.',
    )
    user = forms.ModelChoiceField(queryset=get_user_model().objects.none(), label="Owner")

    def __init__(self, *args, request_user, **kwargs):
        super().__init__(*args, **kwargs)
        if request_user.is_superuser:
            self.fields["user"].queryset = get_user_model().objects.order_by("username")
            self.fields["user"].initial = request_user.pk
        else:
            del self.fields["user"]  # staff import for themselves; a posted owner is ignored

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > settings.LANGRUN_MAX_IMPORT_BYTES:
            raise forms.ValidationError(f"The file is larger than {settings.LANGRUN_MAX_IMPORT_BYTES} bytes.")
        try:
            document = json.loads(upload.read().decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise forms.ValidationError(f"The file is not JSON: {exc}") from exc
        if not isinstance(document, dict) or not document:
            raise forms.ValidationError('The file is JSON but not a flow export: expected an object (one flow, or {"flows": [...]}).')
        return document


class RunNowForm(forms.Form):
    payload = PrettyJSONField(
        label="Test payload (JSON)",
        widget=forms.Textarea(attrs={"rows": 12, "class": "lr-json-editor", "spellcheck": "false"}),
        required=False,
        help_text="What the flow's Webhook node gives, as if this JSON were POSTed to the webhook URL.",
    )

    def clean_payload(self):
        # Not `required`: forms.JSONField would refuse `{}` and `null`, which are payloads like any other.
        if not self.data.get("payload", "").strip():
            raise forms.ValidationError("Enter a JSON payload, e.g. {}.")
        return self.cleaned_data["payload"]


# --- runs --------------------------------------------------------------------


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
        if self.value():
            return queryset.filter(flow_id=self.value())
        return queryset


@admin.register(FlowRun)
class FlowRunAdmin(OwnedModelAdmin):
    owner_field = "flow__user"
    list_display = ["short_id", "flow", "trigger", "status_badge", "received_at", "duration", "attempts"]
    list_display_links = ["short_id"]
    list_filter = ["status", FlowFilter, "trigger", "received_at"]
    list_select_related = ["flow"]
    ordering = ["-received_at"]
    show_full_result_count = False
    list_per_page = 50
    actions = ["replay_selected", "cancel_queued"]
    change_form_template = "admin/flows/flowrun/change_form.html"
    Media = AdminMedia
    # What happened first (where a run failed), then what was asked, then when.
    fieldsets = [
        (None, {"fields": ["id", "flow_link", "status_badge", "trigger", "attempts", "duration", "replay_of_link"]}),
        ("Result", {"fields": ["error", "outputs_display", "node_table", "run_diagram"]}),
        ("Request", {"fields": ["payload_display", "tweaks_display", "content_type", "body_display"]}),
        ("Timing", {"fields": ["received_at", "enqueued_at", "started_at", "finished_at"]}),
    ]
    readonly_fields = [
        "id",
        "flow_link",
        "status_badge",
        "trigger",
        "attempts",
        "replay_of_link",
        "received_at",
        "enqueued_at",
        "started_at",
        "finished_at",
        "duration",
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
        if _is_changelist(request, self):
            # Bodies may be up to LANGRUN_MAX_BODY_BYTES each; a page of 50 must not load them.
            qs = qs.defer("body", "payload", "tweaks", "outputs", "error")
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

    @admin.display(description="status", ordering="status")
    def status_badge(self, run):
        return status_badge(run.status)

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
        new_runs = []
        for run in queryset.select_related("flow", "version"):
            with self.flows_errors_as_messages(request):
                new_runs.append(flow_run_replay(run=run, user=run.user))
        if not new_runs:
            return
        links = format_html_join(
            ", ", '<a href="{}">{}</a>', ((reverse("admin:flows_flowrun_change", args=[r.pk]), str(r.pk)[:8]) for r in new_runs)
        )
        self.message_user(request, format_html("Queued {} replay(s): {}", len(new_runs), links), messages.SUCCESS)

    @contextmanager
    def flows_errors_as_messages(self, request):
        """A domain error of the services (it carries its own message) becomes an error message on the page."""
        try:
            yield
        except FlowsError as exc:
            self.message_user(request, str(exc), messages.ERROR)

    @admin.action(description="Cancel selected queued runs", permissions=["cancel"])
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
            self.message_user(request, f"{skipped} run(s) were not queued any more and were left as they are.", messages.WARNING)

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
            *super().get_urls(),
        ]

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
            context["lr_cancellable"] = obj.status == FlowRun.Status.QUEUED and self.has_cancel_permission(request, obj)
        return super().render_change_form(request, context, *args, **kwargs)


class VariableAdminForm(forms.ModelForm):
    """The stored value is never put in the form: a new value replaces it, an empty field keeps it."""

    new_value = forms.CharField(
        label="Value",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Credentials are encrypted and never shown again; leave empty to keep the current value.",
    )

    request_user = None  # set by SaveRefusalsAsFormErrors.get_form
    save_refused = None  # the service's refusal of this POST's first save (SaveRefusalsAsFormErrors)

    class Meta:
        model = Variable
        fields = ["user", "name", "kind"]

    def clean(self):
        cleaned = super().clean()
        owner = cleaned.get("user") or (self.request_user if self.instance._state.adding else self.instance.user)
        name = cleaned.get("name")
        taken = isinstance(self.save_refused, VariableNameTaken)
        if owner and name and (taken or Variable.objects.filter(user=owner, name=name).exclude(pk=self.instance.pk).exists()):
            self.add_error("name", f"{owner} already has a variable named {name}.")
        if isinstance(self.save_refused, VariableUndecryptable):
            self.add_error("new_value", str(self.save_refused))
        return cleaned


@admin.register(Variable)
class VariableAdmin(SaveRefusalsAsFormErrors, OwnedModelAdmin):
    """Per-user variables; values are write-only here, and saving goes through the variable services."""

    form = VariableAdminForm
    # A concurrent save took the name, or changing the kind needs a credential the current key cannot decrypt.
    save_refusals = (VariableNameTaken, VariableUndecryptable)
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
