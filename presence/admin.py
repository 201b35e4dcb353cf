"""Presence in the admin: what devices, people and the engine said, scoped to the organization of
an organization admin (see `orgs.admin`), and the few operations an admin may run — each through
`presence.services`, so the change is recomputed, recorded and published like any other."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString, mark_safe

from orgs.admin import DELETE, VIEW, OrgScopedAdmin, ViewOnly
from presence import explain, history, selectors, services
from presence.engine import device_state
from presence.models import (
    CalendarBlock,
    Device,
    DeviceHistory,
    ManualStatus,
    MicrosoftPresence,
    PresenceHistory,
    PresencePreferences,
    PresenceState,
)

RECENT_CHANGES_SHOWN = 20

# An admin action on users' presence states: (model admin, request, selected states) -> response.
PresenceAction = Callable[[admin.ModelAdmin, HttpRequest, QuerySet[PresenceState]], HttpResponse | None]


class ReadOnlyAdmin(ViewOnly, OrgScopedAdmin):
    """Computed or device-reported data: shown to admins, changed only through the product."""

    org_admin_actions = frozenset({VIEW})

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """May run the admin's presence actions: whoever may see the rows (a superuser, or the
        organization's admin for its own people, as the queryset is scoped)."""
        return self.has_view_permission(request)


class DeleteThroughServiceAdmin(ReadOnlyAdmin):
    """Deleting here goes through the service, so the user's presence is recomputed and published."""

    org_admin_actions = frozenset({VIEW, DELETE})

    def has_delete_permission(self, request, obj=None) -> bool:
        return OrgScopedAdmin.has_delete_permission(self, request, obj)

    def delete_model(self, request, obj) -> None:
        self.delete_through_service(obj)

    def delete_queryset(self, request, queryset) -> None:
        for obj in queryset.select_related("user"):
            self.delete_through_service(obj)

    def delete_through_service(self, obj) -> None:
        raise NotImplementedError


def back(request: HttpRequest) -> HttpResponseRedirect | None:
    """After an action started from a change page, back to that page (else to the changelist)."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return HttpResponseRedirect(target)
    return None


@admin.register(Device)
class DeviceAdmin(DeleteThroughServiceAdmin):
    list_display = ("short_id", "label", "user", "state", "last_seen_at", "last_active_at", "registered_at")
    list_select_related = ("user__membership__organization__policy",)
    search_fields = ("user__username", "label", "device_id")
    ordering = ("-last_seen_at",)
    actions = ("sign_out",)

    @admin.display(description="device id (pseudonymous)")
    def short_id(self, device: Device) -> str:
        return device.device_id[:12]

    def delete_through_service(self, device: Device) -> None:
        services.sign_out_device(device.user, device.device_id, source="admin:sign_out")

    @admin.action(description="Sign out the selected devices", permissions=["delete"])
    def sign_out(self, request: HttpRequest, queryset: QuerySet[Device]):
        count = 0
        for device in queryset.select_related("user"):
            try:
                services.sign_out_device(device.user, device.device_id, source="admin:sign_out")
                count += 1
            except services.DeviceNotFound:
                pass  # signed out meanwhile
        self.message_user(request, f"Signed out {count} device(s).", messages.SUCCESS)
        return back(request)

    @admin.display(description="state now")
    def state(self, device: Device) -> str:
        policy = selectors.policy_input(selectors.policy_of(selectors.organization_of(device.user)))
        return device_state(selectors.device_input(device), timezone.now(), policy).value


@admin.register(PresenceState)
class PresenceStateAdmin(ReadOnlyAdmin):
    """A user's presence page: the decision now, the last 24 hours, and the operations."""

    list_display = ("user", "status", "activity", "reason", "status_msg", "currently_active", "changed_at")
    list_filter = ("status", "reason")
    search_fields = ("user__username",)
    ordering = ("user__username",)
    # Then the operations the apps above presence offer here (`add_action`).
    actions: ClassVar[tuple[str | PresenceAction, ...]] = ("recompute_now", "clear_manual_status")
    change_form_template = "admin/presence/presencestate/change_form.html"
    readonly_fields = ("why", "timeline", "recent_changes")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "user",
                    ("status", "activity"),
                    "status_msg",
                    "reason",
                    ("currently_active", "last_active_at"),
                    ("changed_at", "computed_at", "valid_until"),
                )
            },
        ),
        ("Why this status", {"fields": ("why",)}),
        ("The last 24 hours", {"fields": ("timeline",)}),
        ("Recent changes", {"fields": ("recent_changes",)}),
    )

    @classmethod
    def add_action(cls, action: PresenceAction) -> None:
        """Offer `action` (an `admin.action` function) on the presence page and its changelist,
        run by whoever may run presence's own (`permissions=["operate"]`). Called by the apps above
        presence when their admin is loaded; adding it again changes nothing."""
        if action not in cls.actions:
            cls.actions = (*cls.actions, action)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        actions = self.get_actions(request)
        names = [action if isinstance(action, str) else action.__name__ for action in self.actions]
        extra = {
            "presence_actions": [(name, actions[name][2]) for name in names if name in actions],
            "devices_url": reverse("admin:presence_device_changelist") + f"?user__id__exact={object_id}",
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra)

    @admin.action(description="Recompute now", permissions=["operate"])
    def recompute_now(self, request: HttpRequest, queryset: QuerySet[PresenceState]):
        count = 0
        for state in queryset.select_related("user"):
            services.recompute(state.user, source="admin:recompute")
            count += 1
        self.message_user(request, f"Recomputed the presence of {count} user(s).", messages.SUCCESS)
        return back(request)

    @admin.action(description="Clear the manual status", permissions=["operate"])
    def clear_manual_status(self, request: HttpRequest, queryset: QuerySet[PresenceState]):
        users = [state.user for state in queryset.select_related("user")]
        cleared = 0
        for user in users:
            if ManualStatus.objects.filter(user=user).exists():
                services.clear_manual_status(user, source="admin:clear_manual_status")
                cleared += 1
        self.message_user(request, f"Cleared the manual status of {cleared} user(s).", messages.SUCCESS)
        return back(request)

    @admin.display(description="why")
    def why(self, state: PresenceState) -> str:
        """The engine's decision now, with the rules in order (the API's `me/presence/explain`)."""
        explained = explain.explain_user(state.user, timezone.now())
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (rule["position"], rule["description"], "applied" if rule["applied"] else "—", rule["note"])
                for rule in explained["rules"]
            ),
        )
        return format_html(
            "<p><strong>{}</strong></p><table><thead><tr><th>#</th><th>rule</th><th>applied</th><th>note</th>"
            "</tr></thead><tbody>{}</tbody></table>",
            explained["summary"],
            rows,
        )

    @admin.display(description="timeline")
    def timeline(self, state: PresenceState) -> SafeString:
        # The SVG is built by a pure function that escapes every label.
        return mark_safe(history.timeline_svg(state.user, timezone.now()))

    @admin.display(description="recent changes")
    def recent_changes(self, state: PresenceState) -> str:
        entries = PresenceHistory.objects.filter(user_id=state.user.public_id).order_by("-at", "-pk")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (f"{e.at:%Y-%m-%d %H:%M:%S}", e.status, e.status_msg, e.reason, e.source)
                for e in entries[:RECENT_CHANGES_SHOWN]
            ),
        )
        if not rows:
            return "No change recorded yet."
        return format_html(
            "<table><thead><tr><th>at (UTC)</th><th>status</th><th>message</th><th>reason</th>"
            "<th>source</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )


@admin.register(ManualStatus)
class ManualStatusAdmin(DeleteThroughServiceAdmin):
    list_display = ("user", "status", "message", "until", "set_at")
    list_filter = ("status",)
    search_fields = ("user__username",)
    actions = ("clear",)

    def delete_through_service(self, manual: ManualStatus) -> None:
        services.clear_manual_status(manual.user, source="admin:clear_manual_status")

    @admin.action(description="Clear the selected manual statuses", permissions=["delete"])
    def clear(self, request: HttpRequest, queryset: QuerySet[ManualStatus]):
        manuals = list(queryset.select_related("user"))
        for manual in manuals:
            self.delete_through_service(manual)
        self.message_user(request, f"Cleared {len(manuals)} manual status(es).", messages.SUCCESS)
        return back(request)


@admin.register(CalendarBlock)
class CalendarBlockAdmin(ReadOnlyAdmin):
    list_display = ("user", "start", "end")
    search_fields = ("user__username",)


@admin.register(PresencePreferences)
class PresencePreferencesAdmin(ReadOnlyAdmin):
    list_display = ("user", "use_calendar_busy", "include_microsoft_presence", "share_externally", "priority")
    search_fields = ("user__username",)


@admin.register(MicrosoftPresence)
class MicrosoftPresenceAdmin(ReadOnlyAdmin):
    list_display = ("user", "availability", "activity", "observed_at", "echo")
    search_fields = ("user__username",)


@admin.register(PresenceHistory)
class PresenceHistoryAdmin(ReadOnlyAdmin):
    list_display = ("at", "user", "status", "activity", "status_msg", "reason", "source")
    list_filter = ("status", "source")
    list_select_related = ("user",)
    search_fields = ("user__username",)
    date_hierarchy = "at"


@admin.register(DeviceHistory)
class DeviceHistoryAdmin(ReadOnlyAdmin):
    list_display = ("at", "user", "label", "short_id", "state")
    list_filter = ("state",)
    list_select_related = ("user",)
    search_fields = ("user__username", "label", "device_id")
    date_hierarchy = "at"

    @admin.display(description="device id (pseudonymous)")
    def short_id(self, entry: DeviceHistory) -> str:
        return entry.device_id[:12]
