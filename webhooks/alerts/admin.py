"""The admin of alerts: subscriptions (the secret shown once, on create) and deliveries with their attempts."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import Http404
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from flows.admin.common import RUN_LARGE_FIELDS, AdminMedia, OwnFlowChoices, StatusBadgeColumn, is_changelist, pretty_json
from langrun.admin import OwnedModelAdmin
from langrun.exceptions import RequestValidationError
from webhooks.alerts.exceptions import DeliveryBeingSent
from webhooks.alerts.models import Delivery, Subscription
from webhooks.alerts.services.sending import delivery_retry_now
from webhooks.alerts.services.subscriptions import alert_url_check, subscription_create, subscription_secret_rotate, subscription_update


class SubscriptionAdminForm(forms.ModelForm):
    url = forms.URLField(required=False, max_length=2000, assume_scheme="https", help_text=Subscription._meta.get_field("url").help_text)
    events = forms.MultipleChoiceField(choices=Subscription.Event.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = Subscription
        fields = ["user", "flow", "url", "email", "events", "backlog_threshold", "backlog_age_seconds", "is_active"]

    def clean_url(self):
        url = self.cleaned_data.get("url", "")
        if url:
            try:
                alert_url_check(url=url, loc=["url"])
            except RequestValidationError as exc:
                raise forms.ValidationError(exc.errors[0]["msg"]) from None
        return url

    def clean(self):
        data = super().clean()
        if bool(data.get("url")) == bool(data.get("email")):
            self.add_error("url", "Give either a URL or an e-mail address, not both.")
        if Subscription.Event.FLOW_BACKLOG in (data.get("events") or []) and data.get("backlog_threshold") is None:
            if data.get("backlog_age_seconds") is None:
                self.add_error("backlog_threshold", "flow.backlog needs a threshold, an age or both.")
        return data


@admin.register(Subscription)
class SubscriptionAdmin(OwnFlowChoices, OwnedModelAdmin):
    """Who is told about runs, and where; the signing secret is shown once, when the subscription is made."""

    form = SubscriptionAdminForm
    list_display = ["__str__", "flow", "owner", "is_active", "created_at"]
    list_filter = ["is_active"]
    list_select_related = ["flow", "user"]
    actions = ["rotate_secret"]

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if not request.user.is_superuser and "user" in form.base_fields:
            form.base_fields["user"].queryset = form.base_fields["user"].queryset.filter(pk=request.user.pk)
        return form

    @admin.action(description="Rotate the signing secret (shown once)")
    def rotate_secret(self, request, queryset):
        rotated = [(sub, subscription_secret_rotate(subscription=sub)) for sub in queryset]
        return self._secrets_shown_once(request, rotated, title="Signing secrets rotated")

    def _secrets_shown_once(self, request, secrets, *, title):
        # On the page itself, never in a message: messages travel in a cookie (signed, not encrypted) or the session.
        return self.secret_shown_once(request, "admin/webhooks/subscription/secrets.html", title=title, secrets=secrets)

    def delete_queryset(self, request, queryset):
        for subscription in queryset:  # one by one, as Subscription.delete waits for a finish writing its alert
            subscription.delete()

    def save_model(self, request, obj, form, change):
        data = {
            name: form.cleaned_data.get(name) for name in ("flow", "url", "email", "events", "backlog_threshold", "backlog_age_seconds")
        }
        data["url"], data["email"] = data["url"] or "", data["email"] or ""
        data["is_active"] = form.cleaned_data.get("is_active", True)
        if change:
            subscription_update(subscription=obj, **data)
            return
        saved = subscription_create(user=form.cleaned_data["user"], **data)
        obj.__dict__.update(saved.__dict__)

    def response_add(self, request, obj, post_url_continue=None):
        return self._secrets_shown_once(request, [(obj, obj.secret)], title="Subscription created")


@admin.register(Delivery)
class DeliveryAdmin(StatusBadgeColumn, OwnedModelAdmin):
    """Every event sent (or being sent) to a subscription or a run's callback, with each attempt; "retry now"
    sends a pending or failed one again under the same webhook-id."""

    list_display = ["event", "target", "status_badge", "attempt_count", "run", "created_at", "next_attempt_at"]
    list_filter = ["status", "event", "kind"]
    list_select_related = ["run"]
    ordering = ["-created_at"]
    actions = ["retry_now"]
    Media = AdminMedia
    fields = [
        "id",
        "webhook_id",
        "kind",
        "event",
        "target",
        "status_badge",
        "subscription",
        "run",
        "flow",
        "attempt_count",
        "next_attempt_at",
        "attempts_display",
        "payload_display",
        "created_at",
        "finished_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if is_changelist(request, self):
            qs = qs.defer(*(f"run__{name}" for name in RUN_LARGE_FIELDS))  # the list shows each run by its id and status
        return qs

    def has_add_permission(self, request):
        return False  # written by runs' ends and the sweep

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="to")
    def target(self, delivery):
        return delivery.url or delivery.email

    @admin.display(description="attempts")
    def attempts_display(self, delivery):
        if not delivery.attempts:
            return "–"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td></tr>",
            (
                (a.get("number"), a.get("at"), a.get("status_code") or "–", a.get("error") or "ok", a.get("duration_ms"))
                for a in delivery.attempts
            ),
        )
        head = mark_safe("<tr><th>#</th><th>at</th><th>status</th><th>error</th><th>took</th></tr>")  # noqa: S308 - a constant
        return format_html("<table>{}{}</table>", head, rows)

    @admin.display(description="payload")
    def payload_display(self, delivery):
        return pretty_json(delivery.payload)

    @admin.action(description="Retry now")
    def retry_now(self, request, queryset):
        sent, being_sent, gone = 0, 0, 0
        for delivery in queryset.exclude(status=Delivery.Status.DELIVERED):
            try:
                delivery_retry_now(delivery=delivery)
                sent += 1
            except DeliveryBeingSent:  # another retry, or its own send, is under way: it is sent once
                being_sent += 1
            except Http404:
                gone += 1
        self.message_user(request, f"{_deliveries(sent, 'will be')} sent again now.")
        if being_sent:
            self.message_user(request, f"{_deliveries(being_sent, 'is')} already being sent; not sent again.", messages.WARNING)
        if gone:
            self.message_user(request, f"{_deliveries(gone, 'was')} deleted meanwhile.", messages.WARNING)


def _deliveries(count: int, verb: str) -> str:
    """A count of deliveries with its verb: "1 delivery is", "2 deliveries are"."""
    plural = {"is": "are", "was": "were"}.get(verb, verb)
    return f"1 delivery {verb}" if count == 1 else f"{count} deliveries {plural}"
