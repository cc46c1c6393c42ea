"""API tokens in the console: list, create (the token is shown once), revoke.

Superusers only: a staff user able to mint a token for a superuser would be one.
Tokens are never edited or deleted here; revocation keeps the record.
"""

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse

from accounts.ip import client_ip
from accounts.models import ApiToken
from accounts.tokens import token_create, token_revoke


def _caller(request):
    from migration_console.core.models import Channel
    from migration_console.core.services.caller import Caller

    return Caller(
        actor=request.user.get_username(),
        channel=Channel.CONSOLE,
        user=request.user,
        client_ip=client_ip(request) or None,
    )


class ApiTokenCreateForm(forms.Form):
    user = forms.ModelChoiceField(
        queryset=get_user_model().objects.filter(is_active=True).order_by("username"),
        help_text="Any active user may hold a token; only a superuser's token may act.",
    )
    name = forms.CharField(max_length=100, required=False, help_text="What it is for.")
    expires_days = forms.IntegerField(
        min_value=1,
        max_value=3650,
        required=False,
        label="Expires after (days)",
        help_text="Empty: never expires.",
    )


class TokenStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("revoked", "revoked")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.active()
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = (
        "prefix",
        "user",
        "name",
        "state",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = (TokenStateFilter, "user")
    search_fields = ("prefix", "name", "user__username")
    readonly_fields = (
        "prefix",
        "user",
        "name",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    fields = readonly_fields
    actions = ["revoke_tokens"]
    ordering = ("-created_at",)

    # --- superusers only; view, add and revoke, never change or delete ----------
    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke_tokens(self, request, queryset):
        if not self.has_add_permission(request):
            raise PermissionDenied
        caller = _caller(request)
        revoked = [
            token
            for token in queryset.select_related("user")
            if token_revoke(token=token, caller=caller)
        ]
        for token in revoked:
            self.log_change(request, token, "Revoked")
        self.message_user(request, f"Revoked {len(revoked)} token(s).", messages.SUCCESS)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not self.has_add_permission(request):
            actions.pop("revoke_tokens", None)
        return actions

    def add_view(self, request, form_url="", extra_context=None):
        """A form, then a page that shows the new token once (never via messages or
        the session, which would store it)."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ApiTokenCreateForm(request.POST or None)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Create API token",
            "form": form,
        }
        if request.method == "POST" and form.is_valid():
            days = form.cleaned_data["expires_days"]
            issued = token_create(
                user=form.cleaned_data["user"],
                name=form.cleaned_data["name"],
                expires_in=timedelta(days=days) if days else None,
                caller=_caller(request),
            )
            self.log_addition(request, issued.token, "Created in the console")
            context.update(title="API token created", token=issued.token, raw_token=issued.raw)
            response = TemplateResponse(request, "admin/accounts/apitoken/created.html", context)
            response["Cache-Control"] = "no-store"
            return response
        return TemplateResponse(request, "admin/accounts/apitoken/add.html", context)
