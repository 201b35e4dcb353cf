"""The shape of `GET /api/v1/me/presence/explain`, for the OpenAPI schema and the answer itself."""

from __future__ import annotations

from rest_framework import serializers

from presence.vocabulary import Activity, DeviceState, Priority, Reason, Status


class ExplainedDeviceSerializer(serializers.Serializer):
    device_id = serializers.CharField(help_text="Pseudonymous device id (a keyed hash of the installation)")
    label = serializers.CharField(allow_blank=True)
    state = serializers.ChoiceField(choices=[s.value for s in DeviceState])
    counted = serializers.BooleanField(help_text="Live: reported within the device timeout, network not offline")
    last_seen = serializers.DateTimeField()
    age_seconds = serializers.IntegerField(help_text="Seconds since the device last reported anything")
    last_active = serializers.DateTimeField(allow_null=True)
    last_active_age_seconds = serializers.IntegerField(allow_null=True)
    activity = serializers.CharField()
    visibility = serializers.CharField()
    in_call = serializers.BooleanField()
    in_meeting = serializers.BooleanField()
    network = serializers.CharField()


class ExplainedManualSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[s.value for s in Status])
    message = serializers.CharField(allow_blank=True)
    until = serializers.DateTimeField(allow_null=True)
    set_at = serializers.DateTimeField(allow_null=True)
    in_force = serializers.BooleanField(help_text="False once `until` has passed")


class ExplainedBlockSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class ExplainedCalendarSerializer(serializers.Serializer):
    in_busy_block = serializers.BooleanField()
    current_block = ExplainedBlockSerializer(allow_null=True)
    upcoming_blocks = ExplainedBlockSerializer(many=True)


class ExplainedMicrosoftSerializer(serializers.Serializer):
    availability = serializers.CharField()
    activity = serializers.CharField()
    observed_at = serializers.DateTimeField()
    age_seconds = serializers.IntegerField()
    fresh = serializers.BooleanField()
    contributes = serializers.CharField(allow_null=True, help_text="busy, dnd, or null (adds nothing)")
    echo = serializers.BooleanField(
        help_text="What SPARKS itself had published to Teams, read back: it adds nothing (no echo of SPARKS' own)."
    )


class ExplainedPreferencesSerializer(serializers.Serializer):
    use_calendar_busy = serializers.BooleanField()
    include_microsoft_presence = serializers.BooleanField()
    priority = serializers.ChoiceField(choices=[p.value for p in Priority], allow_null=True)


class ExplainedPolicySerializer(serializers.Serializer):
    device_timeout_seconds = serializers.IntegerField()
    idle_timeout_seconds = serializers.IntegerField()
    microsoft_max_age_seconds = serializers.IntegerField()
    allow_calendar = serializers.BooleanField()
    allow_microsoft = serializers.BooleanField()
    allow_appear_offline = serializers.BooleanField()
    default_priority = serializers.ChoiceField(choices=[p.value for p in Priority])


class ExplainedInputsSerializer(serializers.Serializer):
    devices = ExplainedDeviceSerializer(many=True)
    manual = ExplainedManualSerializer(allow_null=True)
    calendar = ExplainedCalendarSerializer()
    microsoft = ExplainedMicrosoftSerializer(allow_null=True)
    preferences = ExplainedPreferencesSerializer()
    policy = ExplainedPolicySerializer()
    effective_priority = serializers.ChoiceField(choices=[p.value for p in Priority])


class ExplainedRuleSerializer(serializers.Serializer):
    position = serializers.IntegerField()
    rule = serializers.CharField()
    description = serializers.CharField()
    evaluated = serializers.BooleanField(help_text="False for the rules after the one that decided")
    applied = serializers.BooleanField(help_text="True for the rule that decided")
    note = serializers.CharField()


class PresenceExplanationSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[s.value for s in Status])
    activity = serializers.ChoiceField(choices=[a.value for a in Activity])
    reason = serializers.ChoiceField(choices=[r.value for r in Reason])
    status_msg = serializers.CharField(allow_null=True)
    currently_active = serializers.BooleanField()
    summary = serializers.CharField(help_text='One line, e.g. "offline: no device reported in the last 120 s (…)"')
    evaluated_at = serializers.DateTimeField()
    valid_until = serializers.DateTimeField(allow_null=True)
    inputs = ExplainedInputsSerializer()
    rules = ExplainedRuleSerializer(many=True)
