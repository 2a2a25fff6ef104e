"""What the flows admin's pages share: formatting helpers, copyable fields, assets, save refusals shown as form errors."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from flows import engine
from flows.models import Flow

LATEST_RUNS = 10


PREVIEW_CHARS = 200


API_KEY_PLACEHOLDER = "<YOUR_API_KEY>"


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


# A run's fields that may hold up to LANGRUN_MAX_BODY_BYTES (or its outputs' cap) each: no list reads them.
RUN_LARGE_FIELDS = ("body", "payload", "tweaks", "outputs", "error", "request")


class RelatedFlowsFilter(admin.RelatedOnlyFieldListFilter):
    """The flows of the listed objects by name: Django's filter reads each flow whole, graph included."""

    def field_choices(self, field, request, model_admin):
        listed = model_admin.get_queryset(request).order_by().values(f"{field.name}__pk")
        return list(Flow.objects.filter(pk__in=listed).order_by("name").values_list("pk", "name"))


def is_changelist(request, model_admin) -> bool:
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


class StatusBadgeColumn:
    """The object's `status` as a badge: a column of the list, a field of the page."""

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return status_badge(obj.status)


class OwnFlowChoices:
    """A form's `flow` offers a staff user their own flows only (a superuser, every flow).

    The choice and the list name each flow; neither reads its graph, which may be up to LANGRUN_MAX_BODY_BYTES.
    """

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "flow":
            flows = Flow.objects.only("pk", "name", "user_id")
            kwargs["queryset"] = flows if request.user.is_superuser else flows.filter(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        return qs.defer("flow__data", "flow__description") if is_changelist(request, self) else qs


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
