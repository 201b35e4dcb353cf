"""Shapes of the public API: validation of what comes in, and what colleagues may see."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from presence.models import (
    INSTALLATION_ID_MAX_LENGTH,
    LABEL_MAX_LENGTH,
    MESSAGE_MAX_LENGTH,
    PresencePreferences,
    PresenceState,
)
from presence.strict_fields import (
    AwareDateTimeField,
    BooleanField,
    ChoiceField,
    IntegerField,
    ListField,
    StrictSerializer,
    StringField,
    UUIDField,
)
from presence.vocabulary import Activity, Priority, Reason, Status
from presence.wire import last_active_ago_ms

MAX_CALENDAR_BLOCKS = 1000
MAX_CALENDAR_BLOCK_LENGTH = timedelta(days=31)
# How far from now a time the user gives may be: a manual status or a busy block a year ahead at
# most; a busy block that ended a month ago at most (a client may send its whole month view).
MAX_TIME_AHEAD = timedelta(days=366)
MAX_MANUAL_STATUS_AHEAD = MAX_TIME_AHEAD
MAX_CALENDAR_AHEAD = MAX_TIME_AHEAD
MAX_CALENDAR_BEHIND = timedelta(days=31)
MAX_COUNT = 2**63 - 1  # any other count or offset


# --- Devices (signals: `presence.wire`) -----------------------------------------------------


class DeviceRegistrationSerializer(StrictSerializer):
    installation_id = StringField(
        min_length=1,
        max_length=INSTALLATION_ID_MAX_LENGTH,
        help_text=f"The installation's own id, stable across restarts; at most {INSTALLATION_ID_MAX_LENGTH} "
        "characters. Never stored: the device id is a keyed hash of it.",
    )
    label = StringField(
        max_length=LABEL_MAX_LENGTH,
        required=False,
        allow_blank=True,
        help_text=f'A name for the device, e.g. "Work laptop"; at most {LABEL_MAX_LENGTH} characters.',
    )


class DeviceSerializer(serializers.Serializer):
    device_id = serializers.CharField()
    label = serializers.CharField()
    registered_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()


# --- The user's own inputs -----------------------------------------------------------------


class ManualStatusSerializer(StrictSerializer):
    status = ChoiceField(choices=[s.value for s in Status])
    message = StringField(
        max_length=MESSAGE_MAX_LENGTH,
        required=False,
        allow_blank=True,
        default="",
        help_text=f"The status message; at most {MESSAGE_MAX_LENGTH} characters.",
    )
    until = AwareDateTimeField(
        required=False,
        allow_null=True,
        help_text="When the status ends, with its UTC offset: in the future, and at most "
        f"{MAX_MANUAL_STATUS_AHEAD.days} days from now (checked on arrival; a time outside is refused with 400).",
    )
    duration_seconds = IntegerField(
        required=False,
        min_value=60,
        max_value=int(MAX_MANUAL_STATUS_AHEAD.total_seconds()),
        help_text="Instead of until: how long the status lasts, from a minute to a year.",
    )
    # A non-null until and duration_seconds exclude each other (validate).
    contract_rules = {"not": {"required": ["until", "duration_seconds"], "properties": {"until": {"type": "string"}}}}

    def validate_status(self, value: str) -> str:
        policy = self.context.get("policy")
        if value == Status.OFFLINE and policy is not None and not policy.allow_appear_offline:
            raise serializers.ValidationError(
                "Appearing offline is not allowed by your organization's presence policy."
            )
        return value

    def validate(self, attrs):
        now = timezone.now()
        until = attrs.get("until")
        duration = attrs.pop("duration_seconds", None)
        if until is not None and duration is not None:
            raise serializers.ValidationError(
                {
                    "until": ["Give either until or duration_seconds, not both."],
                    "duration_seconds": ["Give either until or duration_seconds, not both."],
                }
            )
        if duration is not None:
            until = now + timedelta(seconds=duration)
        elif until is not None:
            if until <= now:
                raise serializers.ValidationError({"until": ["Must be in the future."]})
            if until > now + MAX_MANUAL_STATUS_AHEAD:
                raise serializers.ValidationError({"until": ["Must be within a year from now."]})
        attrs["until"] = until
        return attrs


class ManualStatusOutSerializer(serializers.Serializer):
    status = serializers.CharField()
    message = serializers.CharField()
    until = serializers.DateTimeField(allow_null=True)
    set_at = serializers.DateTimeField()


class CalendarBlockSerializer(StrictSerializer):
    start = AwareDateTimeField(
        help_text=f"With its UTC offset; at most {MAX_CALENDAR_AHEAD.days} days from now (checked on arrival, "
        "like end's window; a time outside is refused with 400)."
    )
    end = AwareDateTimeField(
        help_text=f"After start, at most {MAX_CALENDAR_BLOCK_LENGTH.days} days later, and not more than "
        f"{MAX_CALENDAR_BEHIND.days} days ago."
    )

    def validate(self, attrs):
        # A block that ended long ago, or starts years ahead, can never matter: refused rather than
        # stored, which also keeps absurd years (0001, 9999) out of every later computation.
        now = timezone.now()
        if attrs["end"] <= attrs["start"]:
            raise serializers.ValidationError({"end": ["Must be after start."]})
        if attrs["end"] - attrs["start"] > MAX_CALENDAR_BLOCK_LENGTH:
            raise serializers.ValidationError(
                {"end": [f"A busy block lasts at most {MAX_CALENDAR_BLOCK_LENGTH.days} days."]}
            )
        if attrs["end"] < now - MAX_CALENDAR_BEHIND:
            raise serializers.ValidationError(
                {"end": [f"A busy block must end within the last {MAX_CALENDAR_BEHIND.days} days or later."]}
            )
        if attrs["start"] > now + MAX_CALENDAR_AHEAD:
            raise serializers.ValidationError({"start": ["A busy block must start within a year from now."]})
        return attrs


class CalendarSerializer(StrictSerializer):
    blocks = ListField(
        child=CalendarBlockSerializer(),
        allow_empty=True,
        max_length=MAX_CALENDAR_BLOCKS,
        help_text=f"At most {MAX_CALENDAR_BLOCKS} busy blocks; they replace the stored ones.",
    )


class PrivacySerializer(StrictSerializer, serializers.ModelSerializer):
    priority = ChoiceField(choices=[p.value for p in Priority], allow_null=True, required=False)
    effective_priority = serializers.SerializerMethodField()
    organization_allows = serializers.SerializerMethodField()

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.BooleanField: BooleanField,
    }

    class Meta:
        model = PresencePreferences
        fields = [
            "use_calendar_busy",
            "include_microsoft_presence",
            "share_externally",
            "priority",
            "effective_priority",
            "organization_allows",
        ]

    def validate(self, attrs):
        # Turning an option off is always allowed; turning on one the organization forbids is not,
        # as on the settings page, where such an option is disabled.
        allows = self.get_organization_allows(None)
        forbidden = {
            name: ["Not allowed by your organization's presence policy."]
            for name, value in attrs.items()
            if value is True and allows.get(name) is False
        }
        if forbidden:
            raise serializers.ValidationError(forbidden)
        return attrs

    def validate_priority(self, value: str | None) -> str:
        return value or ""  # null: back to the organization's default

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["priority"] = data["priority"] or None
        return data

    def get_effective_priority(self, preferences: PresencePreferences) -> str:
        return preferences.priority or self.context["policy"].default_priority

    def get_organization_allows(self, preferences: PresencePreferences | None) -> dict[str, bool]:
        policy = self.context["policy"]
        return {
            "use_calendar_busy": policy.allow_calendar,
            "include_microsoft_presence": policy.allow_microsoft,
            "share_externally": policy.allow_external_dispatch,
            "appear_offline": policy.allow_appear_offline,
        }


# --- Presence out --------------------------------------------------------------------------


class PresenceSerializer(serializers.Serializer):
    """The user's own presence: the engine's decision, with which rule decided."""

    status = serializers.ChoiceField(choices=[s.value for s in Status])
    activity = serializers.ChoiceField(choices=[a.value for a in Activity])
    status_msg = serializers.SerializerMethodField()
    last_active = serializers.DateTimeField(source="last_active_at", allow_null=True)
    last_active_ago = serializers.SerializerMethodField()
    currently_active = serializers.BooleanField()
    reason = serializers.ChoiceField(choices=[r.value for r in Reason])
    status_until = serializers.DateTimeField(
        allow_null=True,
        help_text="When the shown status is expected to end, as far as the server knows (a manual status's "
        "end, the end of the calendar busy time in progress); null when nobody can tell.",
    )

    def get_status_msg(self, state: PresenceState) -> str | None:
        return state.status_msg or None

    def get_last_active_ago(self, state: PresenceState) -> int | None:
        return last_active_ago_ms(state.last_active_at, self.context["now"])


class SignalOutcomeSerializer(PresenceSerializer):
    signals_applied = serializers.IntegerField()
    signals_ignored = serializers.IntegerField()


class PeerSerializer(serializers.Serializer):
    """What a colleague may see: the visible status, never devices or preferences."""

    user_id = serializers.UUIDField(source="public_id")
    display_name = serializers.CharField()
    status = serializers.SerializerMethodField()
    activity = serializers.SerializerMethodField()
    status_msg = serializers.SerializerMethodField()
    last_active_ago = serializers.SerializerMethodField()
    currently_active = serializers.SerializerMethodField()
    status_until = serializers.SerializerMethodField(
        help_text="When the shown status is expected to end, as far as the server knows; null when nobody can tell."
    )

    def _state(self, user) -> PresenceState:
        return self.context["states"][user.pk]

    def get_status(self, user) -> str:
        return self._state(user).status

    def get_activity(self, user) -> str:
        return self._state(user).activity

    def get_status_msg(self, user) -> str | None:
        return self._state(user).status_msg or None

    def get_last_active_ago(self, user) -> int | None:
        return last_active_ago_ms(self._state(user).last_active_at, self.context["now"])

    def get_currently_active(self, user) -> bool:
        return self._state(user).currently_active

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_status_until(self, user) -> str | None:
        until = self._state(user).status_until
        return serializers.DateTimeField().to_representation(until) if until else None


MAX_SUBSCRIBED_PEERS = 500


class PeerSubscriptionSerializer(StrictSerializer):
    """Whom a live connection watches: some colleagues by user id, or null for the whole organization."""

    user_ids = ListField(child=UUIDField(), allow_null=True, allow_empty=False, max_length=MAX_SUBSCRIBED_PEERS)


PEER_PAGE_SIZE = 100
MAX_PEER_PAGE_SIZE = 500
MAX_PEER_QUERY_LENGTH = 100


class PeerPageQuerySerializer(serializers.Serializer):
    """The query of a page of colleagues: a search, and counts, so whole numbers (a query string is
    text). The schema's parameters are these fields, bounds included."""

    q = StringField(
        required=False,
        allow_blank=True,
        max_length=MAX_PEER_QUERY_LENGTH,
        help_text="Only colleagues found by this text, in any case: part of the display name, the username or "
        f"the e-mail address before its @ (at most {MAX_PEER_QUERY_LENGTH} characters once trimmed; empty: "
        "everyone). Paging applies to what is found.",
    )

    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_COUNT,
        help_text=f"Page size, at least 1 (default {PEER_PAGE_SIZE}; above {MAX_PEER_PAGE_SIZE} means "
        f"{MAX_PEER_PAGE_SIZE})",
    )
    offset = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_COUNT, help_text="Colleagues to skip, 0 or more"
    )


class PeerPageSerializer(serializers.Serializer):
    """A page of colleagues (`?limit=&offset=`, optionally searched with `?q=`)."""

    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = PeerSerializer(many=True)


class ApiErrorSerializer(serializers.Serializer):
    """The one error shape of the API (`sparks_site.errors`): a code, a sentence, and for invalid
    input the offending fields by dotted path ({"signals.1.value": ["..."]})."""

    error = serializers.CharField()
    detail = serializers.CharField()
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)
    retry_after = serializers.IntegerField(
        min_value=1, required=False, help_text="Over a rate limit (429): seconds to wait, as Retry-After says"
    )


class ConfigSerializer(serializers.Serializer):
    aggregator = serializers.BooleanField()
    server_dispatch = serializers.BooleanField()
    sse = serializers.BooleanField()
    device_timeout_seconds = serializers.IntegerField()
    heartbeat_interval_seconds = serializers.IntegerField()
    idle_timeout_seconds = serializers.IntegerField()
