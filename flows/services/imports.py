"""Import and export: flows from Langflow's or langrun's export format, and a flow in langrun's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction

from flows import engine
from flows.exceptions import WebhookSettingInvalid
from flows.models import Flow
from flows.services.concurrency import run_control_settings_stored
from flows.services.flows import flow_create, flow_graph_validate
from flows.services.webhook_settings import webhook_response_graph_check, webhook_settings_stored
from langrun.exceptions import flatten_errors

# The webhook settings a native export carries (flows/services/webhook_settings.py).
WEBHOOK_SETTINGS = ("methods", "verification", "dedupe_key", "accept_if", "handshakes", "response")
# Its run control (flows/services/concurrency.py); retries (`max_attempts`) are checked with its other fields.
RUN_CONTROL = ("concurrency", "throttle")
# The most flows one import creates: each is validated and inserted in the request's one transaction.
MAX_FLOWS = 1000


def flow_import(*, user, document: Any) -> list[Flow]:
    """Create flows from a Langflow export (one flow, or `{"flows": [...]}`) or a langrun export.

    Every flow is converted and validated before any is saved, so a bad file saves
    nothing; problems raise GraphValidationError (located in the uploaded document).
    An endpoint name the user already has gets a `-1`, `-2` … suffix, as Langflow does.
    """
    from flows.importers import ImportProblem, is_langflow_flow, langflow_to_native

    if isinstance(document, dict) and isinstance(document.get("flows"), list):
        documents, prefix = document["flows"], ("flows",)
        if len(documents) > MAX_FLOWS:
            raise engine.GraphValidationError(
                [engine.ValidationIssue(prefix, f"An import takes at most {MAX_FLOWS} flows; this one has {len(documents)}.", "too_long")]
            )
    else:
        documents, prefix = [document], ()
    converted, issues = [], []
    for k, doc in enumerate(documents):
        loc = (*prefix, k) if prefix else ()
        if not isinstance(doc, dict):
            issues.append(engine.ValidationIssue(loc, "A flow must be an object with 'name' and 'data'.", "object_type"))
            continue
        try:
            if is_langflow_flow(doc):
                native = langflow_to_native(doc)
            else:
                not_text = [f for f in ("name", "description") if doc.get(f) is not None and not isinstance(doc[f], str)]
                if not_text:
                    issues += [engine.ValidationIssue((*loc, f), f"The flow's {f} must be text.", "string_type") for f in not_text]
                    continue
                native = {k2: doc.get(k2) for k2 in ("name", "description", "data")}
                native["name"] = str(native["name"] or "Imported flow")[:200]
                checked, problems = _import_settings(doc)
                if problems:
                    issues += [engine.ValidationIssue((*loc, *p["loc"]), p["msg"], p["type"]) for p in problems]
                    continue
                native.update(checked)
                native["webhook_settings"] = _import_webhook_settings(doc)
            flow_graph_validate(data=native["data"], user=user)
        except WebhookSettingInvalid as exc:
            issues.append(engine.ValidationIssue((*loc, *exc.field.split(".")), str(exc), exc.type))
            continue
        except ImportProblem as exc:
            issues += [engine.ValidationIssue((*loc, *i.loc), i.msg, i.type) for i in exc.issues]
            continue
        except engine.GraphValidationError as exc:
            issues += [engine.ValidationIssue((*loc, "data", *i.loc), i.msg, i.type) for i in exc.issues]
            continue
        converted.append(native)
    if issues:
        raise engine.GraphValidationError(issues)
    with transaction.atomic():
        free_endpoint_name = _endpoint_names_free(user=user)
        return [
            flow_create(
                user=user,
                name=native["name"],
                description=native.get("description") or "",
                endpoint_name=free_endpoint_name(native.get("endpoint_name")),
                data=native["data"],
                timeout=native.get("timeout"),
                max_attempts=native.get("max_attempts", 1),
                **native.get("webhook_settings", {}),
            )
            for native in converted
        ]


def _import_settings(doc: dict) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A native document's `endpoint_name`, `timeout` and `max_attempts`, checked (with `methods`) by the flow API's own
    fields; and the problems, located in the document."""
    from flows.serializers import FlowImportSettingsSerializer

    serializer = FlowImportSettingsSerializer(data={k: doc[k] for k in FlowImportSettingsSerializer.Meta.fields if k in doc})
    if not serializer.is_valid():
        return {}, flatten_errors(serializer.errors, [])
    checked = {k: serializer.validated_data.get(k) for k in ("endpoint_name", "timeout")}
    if "max_attempts" in serializer.validated_data:
        checked["max_attempts"] = serializer.validated_data["max_attempts"]
    return checked, []


def _import_webhook_settings(doc: dict) -> dict[str, Any]:
    """The webhook and run control settings of a native document, checked; its `signing_secret` (never exported) is what
    a preset needs."""
    secret = doc.get("signing_secret")
    if secret is not None and not (isinstance(secret, str) and 0 < len(secret) <= 100):
        raise WebhookSettingInvalid("signing_secret", "The signing secret must be a string of 1 to 100 characters.", "string_type")
    settings = {k: doc[k] for k in (*WEBHOOK_SETTINGS, *RUN_CONTROL) if k in doc}
    # Checked before any flow is saved; flow_create stores them.
    run_control_settings_stored({k: settings[k] for k in RUN_CONTROL if k in settings})
    stored = webhook_settings_stored({k: settings[k] for k in WEBHOOK_SETTINGS if k in settings}, has_secret=bool(secret))
    webhook_response_graph_check(response=stored.get("response", ""), data=doc.get("data"))
    return {**settings, "signing_secret": secret} if secret else settings


def _endpoint_names_free(*, user) -> Callable[[Any], str | None]:
    """For one import: the endpoint name a flow wanting `wanted` gets, that name or its first free `-1`, `-2` … form.

    The user's names like it are read once per wanted name, and the suffix each reached is remembered: an upload of
    many flows wanting one name costs a query, not one per suffix tried for each flow.
    """
    import re

    from flows.models import ENDPOINT_NAME_RE
    from flows.models.flows import endpoint_name_reads_as_id

    given: set[str] = set()  # the names this import's flows got
    stored: dict[str, set[str]] = {}  # per wanted name, the user's names that start as its suffixed forms do
    suffix: dict[str, int] = {}

    def free(wanted: Any) -> str | None:
        if not isinstance(wanted, str) or not re.fullmatch(ENDPOINT_NAME_RE, wanted) or endpoint_name_reads_as_id(wanted):
            return None
        if wanted not in stored:
            stored[wanted] = set(
                Flow.objects.filter(user=user, endpoint_name__startswith=wanted[:80]).values_list("endpoint_name", flat=True)
            )
        n = suffix.get(wanted, 0)
        candidate = f"{wanted[: 100 - len(str(n)) - 1]}-{n}" if n else wanted[:100]
        while candidate in stored[wanted] or candidate in given:
            n += 1
            candidate = f"{wanted[: 100 - len(str(n)) - 1]}-{n}"
        suffix[wanted] = n
        given.add(candidate)
        return candidate

    return free


def flow_export(*, flow: Flow) -> dict[str, Any]:
    """The flow in langrun's native format, ready for `flow_import` (here or on another langrun)."""
    return {
        "name": flow.name,
        "description": flow.description,
        "endpoint_name": flow.endpoint_name,
        "timeout": flow.timeout,
        "max_attempts": flow.max_attempts,
        "concurrency": flow.concurrency,
        "throttle": flow.throttle,
        "methods": list(flow.allowed_methods),
        "dedupe_key": flow.dedupe_key or None,
        "accept_if": flow.accept_if or None,
        "handshakes": flow.handshakes.split(",") if flow.handshakes else [],
        "verification": flow.verification_settings,  # the secret is not exported: set it on the importing side
        "response": flow.response_settings,
        "data": flow.data,
    }
