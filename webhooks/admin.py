"""The admin for ingest tokens: listed per flow (and on the flow's page), created with the token shown once, revoked by an action.

The outgoing webhooks' admin (subscriptions, deliveries) is in `webhooks/alerts/admin.py`, registered by importing it here.
"""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone

from flows.admin.common import OwnFlowChoices, RelatedFlowsFilter
from langrun.admin import OwnedModelAdmin
from webhooks.alerts import admin as alerts_admin  # noqa: F401  registers subscriptions and deliveries
from webhooks.models import IngestToken
from webhooks.tokens import ingest_token_create, ingest_token_revoke


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return IngestToken.State.choices

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == IngestToken.State.REVOKED:
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == IngestToken.State.EXPIRED:
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == IngestToken.State.ACTIVE:
            return queryset.filter(revoked_at__isnull=True).exclude(expires_at__lte=now)
        return queryset


@admin.register(IngestToken)
class IngestTokenAdmin(OwnFlowChoices, OwnedModelAdmin):
    owner_field = "flow__user"
    list_display = ["name", "masked", "flow", "state", "created_at", "expires_at", "last_used_at", "use_count"]
    # Only the flows of the tokens listed (the user's own): a plain "flow" filter would name every user's flows.
    list_filter = [StateFilter, ("flow", RelatedFlowsFilter)]
    search_fields = ["name", "prefix", "flow__name"]
    list_select_related = ["flow"]
    actions = ["revoke"]

    @admin.display(description="token")
    def masked(self, obj: IngestToken) -> str:
        return obj.masked

    @admin.display(description="state")
    def state(self, obj: IngestToken) -> str:
        return obj.state

    def get_changeform_initial_data(self, request):
        # OwnedModelAdmin's initial owner is not a field here; the flow may come from the flow's page (?flow=<id>).
        return admin.ModelAdmin.get_changeform_initial_data(self, request)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["flow", "name", "expires_at"]
        return ["flow", "name", "masked", "state", "created_at", "created_by", "expires_at", "revoked_at", "last_used_at", "use_count"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        # Only the name can change: the flow and the expiry are what the token was issued for.
        return ["flow", "masked", "state", "created_at", "created_by", "expires_at", "revoked_at", "last_used_at", "use_count"]

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name"])
            return
        new = ingest_token_create(
            flow=form.cleaned_data["flow"],
            name=form.cleaned_data.get("name", ""),
            expires_at=form.cleaned_data.get("expires_at"),
            created_by=request.user,
        )
        obj.__dict__.update(new.ingest_token.__dict__)
        obj.new_secret = new.token

    def response_add(self, request, obj, post_url_continue=None):
        return self.secret_shown_once(
            request,
            "admin/webhooks/ingesttoken/created.html",
            title="Ingest token created",
            ingest_token=obj,
            secret=obj.new_secret,
            webhook_url=request.build_absolute_uri(reverse("webhook-token", kwargs={"token": obj.new_secret})),
        )

    @admin.action(description="Revoke selected ingest tokens", permissions=["change"])
    def revoke(self, request, queryset):
        tokens = list(queryset.filter(revoked_at__isnull=True))
        for token in tokens:
            ingest_token_revoke(ingest_token=token)
        self.message_user(request, f"Revoked {len(tokens)} ingest token(s).", messages.SUCCESS)
