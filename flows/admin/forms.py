"""The flows admin's forms: a flow's graph, an import, "Run now" and a variable's write-only value."""

from __future__ import annotations

import json

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model

from flows import engine
from flows.admin.common import describe_issue
from flows.exceptions import EndpointNameTaken, ScheduleLimitReached, VariableNameTaken, VariableValueRequired, WebhookSettingInvalid
from flows.models import WEBHOOK_METHODS, Flow, Variable
from flows.services.flows import flow_endpoint_name_taken, flow_graph_validate
from flows.services.schedules import flow_schedules_move_check
from flows.services.webhook_settings import (
    webhook_dedupe_key_parse,
    webhook_handshakes_parse,
    webhook_methods_parse,
    webhook_response_graph_check,
    webhook_response_parse,
    webhook_verification_parse,
)
from langrun.parsers import json_document_loads, json_unstorable


class StorableJSONField(forms.JSONField):
    """Django's JSONField, refusing as the API's parser does what no database column can store: NaN, Infinity and
    1e999 (Django's takes them; SQLite's JSON_VALID check then failed the save), NUL characters, unpaired surrogates,
    nesting past LANGRUN_MAX_JSON_DEPTH, and text the parser itself cannot read (too deep for its recursion, an
    integer past the digit limit), each a form error instead of a 500."""

    def to_python(self, value):
        if self.disabled or value in self.empty_values or not isinstance(value, str):
            return super().to_python(value)
        try:
            converted = json_document_loads(value)
        except json.JSONDecodeError:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid", params={"value": value}) from None
        except ValueError as exc:  # what the API's parser refuses too, with its reason
            raise forms.ValidationError(str(exc), code="invalid") from None
        return forms.fields.JSONString(converted) if isinstance(converted, str) else converted

    def bound_data(self, data, initial):
        # What to_python refused is shown again as it was typed (a lone surrogate written out cannot even be sent).
        try:
            value = super().bound_data(data, initial)
        except (RecursionError, ValueError):
            return forms.fields.InvalidJSONInput(data)
        if isinstance(value, forms.fields.InvalidJSONInput) or json_unstorable(value) is None:
            return value
        return forms.fields.InvalidJSONInput(data)


class PrettyJSONField(StorableJSONField):
    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


def _setting_checked(parse, *args, **kwargs):
    """A webhook setting's parser called, its refusal shown on the form's field."""
    try:
        return parse(*args, **kwargs)
    except WebhookSettingInvalid as exc:
        raise forms.ValidationError(str(exc)) from exc


class FlowAdminForm(forms.ModelForm):
    data = PrettyJSONField(
        label="Graph (JSON)",
        widget=forms.Textarea(attrs={"rows": 22, "class": "lr-json-editor", "spellcheck": "false"}),
        help_text='{"nodes": [{"id", "type", "params"}], "edges": [{"source", "target", "source_output", "target_input"}]}',
    )
    methods = forms.MultipleChoiceField(
        label="Methods",
        choices=[(m, m) for m in WEBHOOK_METHODS],
        initial=["POST"],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="HTTP methods the webhook accepts (none checked: POST). A GET's payload is its query; another method is a 405.",
    )
    handshakes = forms.MultipleChoiceField(
        label="Handshakes",
        choices=[
            ("slack", "Slack url_verification"),
            ("meta", "Meta hub.challenge (token: the flow's secret)"),
            ("graph", "Microsoft Graph validationToken"),
        ],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The senders' URL checks the webhook answers before storing anything.",
    )
    verification = StorableJSONField(
        label="Verification",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "class": "lr-json-editor", "spellcheck": "false"}),
        help_text='A preset, e.g. {"provider": "stripe"} (standard, github, stripe, slack, shopify, or token with "header" or '
        '"query"); set the flow\'s secret first (API: POST /api/v1/flows/{id}/signing-secret). Empty: Standard Webhooks or GitHub.',
    )
    response = StorableJSONField(
        label="Response",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "class": "lr-json-editor", "spellcheck": "false"}),
        help_text='What the webhook answers. Empty: the 202 with run_id. {"mode": "static", "status": 200, "headers": {…}, '
        '"body": "ok"}: a fixed answer once the run is recorded. {"mode": "flow", "timeout": 10}: waits for the run and '
        "answers what its Respond node produced (a flow with a Respond node needs this mode).",
    )
    request_user = None  # set by SaveRefusalsAsFormErrors.get_form
    save_refused = None  # the service's refusal of this POST's first save (SaveRefusalsAsFormErrors)

    class Meta:
        model = Flow
        fields = [
            "user",
            "name",
            "description",
            "endpoint_name",
            "data",
            "dedupe_key",
            "accept_if",
            "max_concurrent_runs",
            "concurrency_key",
            "throttle_limit",
            "throttle_period",
            "throttle_key",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["methods"].initial = list(self.instance.allowed_methods)
            self.fields["handshakes"].initial = self.instance.handshakes.split(",") if self.instance.handshakes else []
            # The instance's stored text would be shown as a JSON string (and posted back as one): the form shows the object.
            self.initial["verification"] = self.instance.verification_settings
            self.initial["response"] = self.instance.response_settings if self.instance.response else None

    def clean_response(self):
        value = self.cleaned_data["response"]
        _setting_checked(webhook_response_parse, value)
        return value

    def clean_handshakes(self):
        value = self.cleaned_data["handshakes"]
        _setting_checked(webhook_handshakes_parse, value, has_secret=bool(self.instance.signing_secret))
        return value

    def clean_dedupe_key(self):
        return _setting_checked(webhook_dedupe_key_parse, self.cleaned_data["dedupe_key"])

    def clean_accept_if(self):
        return _setting_checked(webhook_dedupe_key_parse, self.cleaned_data["accept_if"], field="accept_if")

    def clean_concurrency_key(self):
        return _setting_checked(webhook_dedupe_key_parse, self.cleaned_data["concurrency_key"], field="concurrency_key")

    def clean_throttle_key(self):
        return _setting_checked(webhook_dedupe_key_parse, self.cleaned_data["throttle_key"], field="throttle_key")

    def clean(self):
        cleaned = super().clean()
        if "response" in cleaned and "data" in cleaned:  # both valid on their own: a Respond node needs flow mode
            try:
                webhook_response_graph_check(response=webhook_response_parse(cleaned["response"]), data=cleaned["data"])
            except WebhookSettingInvalid as exc:
                self.add_error("response", str(exc))
        # Run control (flows/services/concurrency.py): a key needs its limit; a throttle needs both numbers.
        if cleaned.get("concurrency_key") and not cleaned.get("max_concurrent_runs"):
            self.add_error("max_concurrent_runs", "A concurrency key needs a limit.")
        if bool(cleaned.get("throttle_limit")) != bool(cleaned.get("throttle_period")):
            self.add_error("throttle_period", "A throttle needs both a limit and a period.")
        if cleaned.get("throttle_key") and not cleaned.get("throttle_limit"):
            self.add_error("throttle_limit", "A throttle key needs a limit and a period.")
        self._clean_owner_change(cleaned.get("user"))
        return cleaned

    def _clean_owner_change(self, owner) -> None:
        # The flow's schedules go with it: the new owner's share of schedules is the service's rule, shown on the field.
        if isinstance(self.save_refused, ScheduleLimitReached):
            self.add_error("user", str(self.save_refused))
        elif owner is not None and self.instance.pk and owner.pk != self.instance.user_id:
            try:
                flow_schedules_move_check(flow_id=self.instance.pk, user_id=owner.pk)
            except ScheduleLimitReached as exc:
                self.add_error("user", str(exc))

    def clean_verification(self):
        value = self.cleaned_data["verification"]
        _setting_checked(webhook_verification_parse, value, has_secret=bool(self.instance.signing_secret))
        return value

    def clean_methods(self):
        return list(_setting_checked(webhook_methods_parse, self.cleaned_data["methods"] or ["POST"]))

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
            document = json_document_loads(upload.read().decode("utf-8-sig"))
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
        if isinstance(self.save_refused, VariableValueRequired):
            self.add_error("new_value", str(self.save_refused))
        return cleaned
