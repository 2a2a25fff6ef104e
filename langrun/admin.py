from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.http import Http404
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from langrun.models import ApiKey, User
from langrun.services import api_key_create, api_key_revoke

admin.site.site_header = "langrun administration"
admin.site.site_title = "langrun"


class OwnedModelAdmin(admin.ModelAdmin):
    """Admin for objects that belong to a user: superusers see all of them, other staff only their own.

    Django's model permissions (a user's own or their groups') decide what a staff user may do, as everywhere in
    Django's admin; owner scoping narrows it to their own objects: another user's object is a 404.
    """

    owner_field = "user"  # lookup path from the model to its owner

    @admin.display(description="owner", ordering="user__username")
    def owner(self, obj):  # the list's column, for the admins whose owner is `user`
        return obj.user

    def owns(self, request, obj) -> bool:
        if request.user.is_superuser:
            return True
        *path, last = self.owner_field.split("__")
        for part in path:
            obj = getattr(obj, part)
        return getattr(obj, f"{last}_id") == request.user.pk

    def get_changeform_initial_data(self, request):
        return {self.owner_field: request.user.pk, **super().get_changeform_initial_data(request)}

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        return qs.filter(**{self.owner_field: request.user})

    def get_object(self, request, object_id, from_field=None):
        # Django redirects to the index for a missing object; another user's object must be indistinguishable from none.
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No such object.")
        return obj

    def admin_page(self, request, template: str, **context) -> TemplateResponse:
        """A page of this admin's own (an import, a form, a comparison), in the admin's frame."""
        return TemplateResponse(request, template, {**self.admin_site.each_context(request), "opts": self.opts, **context})

    def secret_shown_once(self, request, template: str, **context) -> TemplateResponse:
        """The page that shows a new secret: the only time it exists in clear, rendered now and never stored (not
        even in a message cookie)."""
        response = self.admin_page(request, template, **context)
        add_never_cache_headers(response)
        return response

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) and (obj is None or self.owns(request, obj))

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and (obj is None or self.owns(request, obj))

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and (obj is None or self.owns(request, obj))


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    pass


@admin.register(ApiKey)
class ApiKeyAdmin(OwnedModelAdmin):
    list_display = ["name", "masked", "user", "is_active", "created_at", "last_used_at", "use_count"]
    list_filter = ["is_active"]
    search_fields = ["name", "prefix"]
    list_select_related = ["user"]
    actions = ["revoke"]

    @admin.display(description="key")
    def masked(self, obj: ApiKey) -> str:
        return obj.masked

    def get_list_filter(self, request):
        return ["is_active", "user"] if request.user.is_superuser else ["is_active"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["user", "name"] if request.user.is_superuser else ["name"]
        return ["user", "name", "is_active", "masked", "created_at", "last_used_at", "use_count"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["user", "masked", "created_at", "last_used_at", "use_count"]

    def save_model(self, request, obj, form, change):
        if change:
            # What the page edits, on the row as it is now: a whole-row save inserted again a key deleted since the
            # page was read (the deleted key authenticated again) and wrote back the uses counted meanwhile.
            if not ApiKey.objects.filter(pk=obj.pk).update(name=obj.name, is_active=obj.is_active):
                raise Http404("No such object.")
            return
        owner = form.cleaned_data.get("user") or request.user
        new = api_key_create(user=owner, name=form.cleaned_data.get("name", ""))
        obj.__dict__.update(new.api_key.__dict__)
        obj.new_secret = new.key

    def response_add(self, request, obj, post_url_continue=None):
        return self.secret_shown_once(
            request, "admin/langrun/apikey/created.html", title="API key created", api_key=obj, secret=obj.new_secret
        )

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request, queryset):
        keys = list(queryset.filter(is_active=True))
        for key in keys:
            api_key_revoke(api_key=key)
        self.message_user(request, f"Revoked {len(keys)} API key(s).", messages.SUCCESS)


class SuperuserOnlyAdminMixin:
    """django-q2's task and schedule pages: for superusers only, whatever permissions a staff user holds."""

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request, *args):
        return request.user.is_active and request.user.is_superuser and super().has_add_permission(request, *args)

    def has_change_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser and super().has_delete_permission(request, obj)


def restrict_django_q_admin(site: admin.AdminSite) -> None:
    """django-q2's admin pages become superuser-only. Called from LangrunConfig.ready(), once every app's admin is loaded."""
    for model, model_admin in list(site._registry.items()):
        if model._meta.app_label == "django_q" and not isinstance(model_admin, SuperuserOnlyAdminMixin):
            cls = type(model_admin)
            site.unregister(model)
            site.register(model, type(f"SuperuserOnly{cls.__name__}", (SuperuserOnlyAdminMixin, cls), {}))
