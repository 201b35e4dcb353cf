from django.contrib import admin
from django.utils import timezone

from presence import selectors, services
from presence.engine import device_state
from presence.models import (
    CalendarBlock,
    Device,
    ManualStatus,
    MicrosoftPresence,
    PresencePreferences,
    PresenceState,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Computed or device-reported data: shown to admins, changed only through the product."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class DeleteThroughServiceAdmin(ReadOnlyAdmin):
    """Deleting here goes through the service, so the user's presence is recomputed and published."""

    def has_delete_permission(self, request, obj=None) -> bool:
        return admin.ModelAdmin.has_delete_permission(self, request, obj)

    def delete_model(self, request, obj) -> None:
        self.delete_through_service(obj)

    def delete_queryset(self, request, queryset) -> None:
        for obj in queryset.select_related("user"):
            self.delete_through_service(obj)

    def delete_through_service(self, obj) -> None:
        raise NotImplementedError


@admin.register(Device)
class DeviceAdmin(DeleteThroughServiceAdmin):
    list_display = ("short_id", "label", "user", "state", "last_seen_at", "last_active_at", "registered_at")
    list_select_related = ("user__membership__organization__policy",)
    search_fields = ("user__username", "label", "device_id")
    ordering = ("-last_seen_at",)

    @admin.display(description="device id (pseudonymous)")
    def short_id(self, device: Device) -> str:
        return device.device_id[:12]

    def delete_through_service(self, device: Device) -> None:
        services.sign_out_device(device.user, device.device_id)

    @admin.display(description="state now")
    def state(self, device: Device) -> str:
        policy = selectors.policy_input(selectors.policy_of(selectors.organization_of(device.user)))
        return device_state(selectors.device_input(device), timezone.now(), policy).value


@admin.register(PresenceState)
class PresenceStateAdmin(ReadOnlyAdmin):
    list_display = ("user", "status", "activity", "reason", "status_msg", "currently_active", "changed_at")
    list_filter = ("status", "reason")
    search_fields = ("user__username",)
    ordering = ("user__username",)


@admin.register(ManualStatus)
class ManualStatusAdmin(DeleteThroughServiceAdmin):
    list_display = ("user", "status", "message", "until", "set_at")
    list_filter = ("status",)
    search_fields = ("user__username",)

    def delete_through_service(self, manual: ManualStatus) -> None:
        services.clear_manual_status(manual.user)


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
    list_display = ("user", "availability", "activity", "observed_at")
    search_fields = ("user__username",)
