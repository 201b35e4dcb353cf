"""The integrations in the admin: superusers'. An organization admin is given none of it (the
secrets are written here), and another organization's objects are a 404 like everywhere else.

On a user's presence page (presence's admin), the integrations add "Re-dispatch now"."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect

from integrations import dispatch
from integrations.models import DispatchState, ExternalAccount, GraphPublication, MatrixHomeserver, MicrosoftTenant
from orgs.admin import OrgScopedAdmin, ViewOnly
from presence.admin import PresenceStateAdmin, back
from presence.models import PresenceState


class IntegrationAdmin(OrgScopedAdmin):
    org_admin_actions = frozenset()


class _SecretForm(forms.ModelForm):
    """A secret is written, never shown back: left empty, the stored one stays."""

    secret_field = ""
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted and never shown again. Leave empty to keep the current one.",
    )

    def save(self, commit: bool = True):
        instance = super().save(commit=False)
        if self.cleaned_data.get("secret"):
            setattr(instance, self.secret_field, self.cleaned_data["secret"])
        if commit:
            instance.save()
        return instance


class MicrosoftTenantForm(_SecretForm):
    secret_field = "client_secret"

    class Meta:
        model = MicrosoftTenant
        fields = ["organization", "tenant_id", "client_id", "enabled"]
        labels = {"secret": "Client secret"}


class MatrixHomeserverForm(_SecretForm):
    secret_field = "as_token"
    base_url = forms.URLField(
        assume_scheme="https", help_text="Client-server API base URL, e.g. https://matrix.example.org"
    )

    class Meta:
        model = MatrixHomeserver
        fields = ["organization", "base_url", "server_name", "user_id_template", "enabled"]


@admin.register(MicrosoftTenant)
class MicrosoftTenantAdmin(IntegrationAdmin):
    org_lookup = "organization"
    form = MicrosoftTenantForm
    list_display = ("organization", "tenant_id", "client_id", "has_secret", "enabled")
    list_filter = ("enabled",)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.base_fields["secret"].label = "Client secret"
        return form

    @admin.display(boolean=True, description="client secret set")
    def has_secret(self, tenant: MicrosoftTenant) -> bool:
        return bool(tenant.client_secret_encrypted)


@admin.register(MatrixHomeserver)
class MatrixHomeserverAdmin(IntegrationAdmin):
    org_lookup = "organization"
    form = MatrixHomeserverForm
    list_display = ("organization", "server_name", "base_url", "has_token", "enabled")
    list_filter = ("enabled",)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.base_fields["secret"].label = "Appservice token (as_token)"
        return form

    @admin.display(boolean=True, description="as_token set")
    def has_token(self, homeserver: MatrixHomeserver) -> bool:
        return bool(homeserver.as_token_encrypted)


@admin.register(ExternalAccount)
class ExternalAccountAdmin(IntegrationAdmin):
    list_display = ("user", "matrix_user_id", "microsoft_object_id")
    search_fields = ("user__username", "matrix_user_id", "microsoft_object_id")
    autocomplete_fields = ("user",)


@admin.register(DispatchState)
class DispatchStateAdmin(IntegrationAdmin):
    """What was last published to whom, and the last error: shown, changed only by dispatch."""

    list_display = ("user", "target", "sent_status", "sent_at", "pending", "attempts", "last_error", "last_error_at")
    list_filter = ("target", "attempts")
    search_fields = ("user__username",)
    list_select_related = ("user",)
    readonly_fields = (
        "user",
        "target",
        "desired",
        "desired_at",
        "sent",
        "sent_at",
        "attempts",
        "last_error",
        "last_error_at",
    )

    @admin.display(description="last dispatched")
    def sent_status(self, state: DispatchState) -> str:
        if not state.sent:
            return "—"
        message = state.sent.get("status_msg")
        return f"{state.sent.get('status')}/{state.sent.get('activity')}" + (f" “{message}”" if message else "")

    @admin.display(boolean=True)
    def pending(self, state: DispatchState) -> bool:
        return state.pending

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(GraphPublication)
class GraphPublicationAdmin(ViewOnly, IntegrationAdmin):
    """What SPARKS itself has put into users' Teams presence (its session, the preferred presence it
    set): shown, written only by dispatch. Ended rows stay a minute or two, for the import."""

    list_display = ("user", "kind", "availability", "activity", "set_at", "refreshed_at", "expires_at", "ended_at")
    list_filter = ("kind",)
    search_fields = ("user__username",)
    list_select_related = ("user",)
    readonly_fields = list_display


@admin.action(description="Re-dispatch now", permissions=["operate"])
def redispatch_now(
    modeladmin: PresenceStateAdmin, request: HttpRequest, queryset: QuerySet[PresenceState]
) -> HttpResponseRedirect | None:
    """Publish the selected users' presence to Matrix / Teams again, even where it was sent."""
    if not dispatch.dispatch_enabled():
        modeladmin.message_user(
            request, "Dispatch is off in this deployment (PRESENCE_SERVER_DISPATCH).", messages.WARNING
        )
        return back(request)
    planned = [p for state in queryset.select_related("user") for p in dispatch.redispatch(state.user)]
    modeladmin.message_user(
        request, f"Scheduled {sum(p.scheduled for p in planned)} delivery(ies) to Matrix / Teams.", messages.SUCCESS
    )
    return back(request)


PresenceStateAdmin.add_action(redispatch_now)
