"""What presence is computed from, and what it was computed to."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from presence.vocabulary import (
    Activity,
    ActivityValue,
    NetworkValue,
    Priority,
    Reason,
    Status,
    VisibilityValue,
)

MESSAGE_MAX_LENGTH = 280
LABEL_MAX_LENGTH = 64
DEVICE_ID_MAX_LENGTH = 64
INSTALLATION_ID_MAX_LENGTH = 256  # never stored: hashed into the device id


def _choices(enum) -> list[tuple[str, str]]:
    return [(member.value, member.value.replace("_", " ")) for member in enum]


class Device(models.Model):
    """One installation of a SPARKS client, known only by a pseudonymous id."""

    # A keyed hash of (user, installation id): the raw installation id is never stored.
    device_id = models.CharField(max_length=DEVICE_ID_MAX_LENGTH, primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="devices")
    label = models.CharField(max_length=LABEL_MAX_LENGTH, blank=True)
    registered_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(help_text="When the server last received a signal from the device.")
    last_active_at = models.DateTimeField(null=True, blank=True, help_text="Last user activity on the device.")
    activity = models.CharField(max_length=10, choices=_choices(ActivityValue), default=ActivityValue.ACTIVE)
    visibility = models.CharField(max_length=10, choices=_choices(VisibilityValue), default=VisibilityValue.VISIBLE)
    in_call = models.BooleanField(default=False)
    in_meeting = models.BooleanField(default=False)
    network = models.CharField(max_length=10, choices=_choices(NetworkValue), default=NetworkValue.ONLINE)
    # The highest signal sequence number applied; older ones never override newer ones.
    last_seq = models.BigIntegerField(default=-1)

    class Meta:
        indexes = [models.Index(fields=["user", "last_seen_at"])]

    def __str__(self) -> str:
        return f"{self.label or self.device_id[:12]} ({self.user})"


class PresencePreferences(models.Model):
    """The user's Privacy → Presence (server) choices."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="presence_preferences"
    )
    use_calendar_busy = models.BooleanField(default=True)
    include_microsoft_presence = models.BooleanField(default=False)
    share_externally = models.BooleanField(default=False)
    # Empty: the organization's default priority applies.
    priority = models.CharField(max_length=20, choices=_choices(Priority), blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "presence preferences"

    def __str__(self) -> str:
        return f"Presence preferences of {self.user}"


class ManualStatus(models.Model):
    """The status the user chose in the toolbar, optionally until a time."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="manual_status"
    )
    status = models.CharField(max_length=10, choices=_choices(Status))
    message = models.CharField(max_length=MESSAGE_MAX_LENGTH, blank=True)
    until = models.DateTimeField(null=True, blank=True)
    set_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "manual statuses"

    def __str__(self) -> str:
        return f"{self.user}: {self.status}"


class CalendarBlock(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="calendar_blocks")
    start = models.DateTimeField()
    end = models.DateTimeField()

    class Meta:
        ordering = ["start"]
        indexes = [models.Index(fields=["user", "end"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(end__gt=models.F("start")), name="calendar_block_ends_after_start"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user}: busy {self.start:%Y-%m-%d %H:%M} to {self.end:%H:%M}"


class MicrosoftPresence(models.Model):
    """The user's presence as Microsoft Graph last reported it (kept verbatim)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="microsoft_presence"
    )
    availability = models.CharField(max_length=40)
    activity = models.CharField(max_length=40)
    observed_at = models.DateTimeField()
    echo = models.BooleanField(
        default=False,
        help_text="Explained by what SPARKS itself had published to the user's Teams presence then: adds nothing.",
    )

    class Meta:
        verbose_name_plural = "Microsoft presences"

    def __str__(self) -> str:
        return f"{self.user}: {self.availability}/{self.activity}"


class PresenceState(models.Model):
    """The current aggregated decision for a user: written only by `presence.services.funnel`."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="presence_state"
    )
    status = models.CharField(max_length=10, choices=_choices(Status), default=Status.OFFLINE)
    activity = models.CharField(max_length=20, choices=_choices(Activity), default=Activity.OFFLINE)
    status_msg = models.CharField(max_length=MESSAGE_MAX_LENGTH, blank=True)
    last_active_at = models.DateTimeField(null=True, blank=True)
    currently_active = models.BooleanField(default=False)
    reason = models.CharField(max_length=40, choices=_choices(Reason), default=Reason.NO_LIVE_DEVICE)
    # When the passing of time may change the decision: the sweep recomputes rows past it, and a
    # read of such a row decides again in memory (storing nothing), so a missed sweep never makes
    # a read wrong.
    valid_until = models.DateTimeField(null=True, blank=True, db_index=True)
    # When the shown status is expected to end, as far as the server knows (`engine.Decision`).
    status_until = models.DateTimeField(null=True, blank=True)
    changed_at = models.DateTimeField(help_text="When the visible status last changed.")
    computed_at = models.DateTimeField()

    class Meta:
        verbose_name = "current presence"
        verbose_name_plural = "current presence"

    def __str__(self) -> str:
        return f"{self.user}: {self.status}"


class PresenceHistory(models.Model):
    """One change of a user's visible presence, as it was published.

    Written from the single exit of every visible change (`presence.events.publish_many`), so
    every source is covered; with Redis buffered there and written in batches by the persist task.
    """

    # Made when the change is published: writing the same buffered entry twice (a flusher that
    # died between the insert and trimming the buffer) inserts it once.
    entry_id = models.UUIDField(unique=True, editable=False)
    # By public id: the change carries it, so recording needs no lookup on the hot path.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, to_field="public_id", related_name="presence_history"
    )
    status = models.CharField(max_length=10, choices=_choices(Status))
    activity = models.CharField(max_length=20, choices=_choices(Activity))
    status_msg = models.CharField(max_length=MESSAGE_MAX_LENGTH, blank=True)
    reason = models.CharField(max_length=40, blank=True)
    source = models.CharField(max_length=40, blank=True, help_text="What caused the change.")
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["user", "at"])]
        verbose_name = "presence history entry"
        verbose_name_plural = "presence history"

    def __str__(self) -> str:
        return f"{self.user_id}: {self.status} at {self.at:%Y-%m-%d %H:%M:%S}"


class DeviceHistory(models.Model):
    """A change of one device's reported state (live, idle, hidden, in a call, offline, signed out),
    for the admin's timeline. Kept when the device itself is signed out and deleted."""

    class State(models.TextChoices):
        LIVE = "live"
        IDLE = "idle"
        HIDDEN = "hidden"
        IN_CALL = "in_call", "in call or meeting"
        OFFLINE = "offline"
        SIGNED_OUT = "signed_out", "signed out"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="device_history")
    device_id = models.CharField(max_length=DEVICE_ID_MAX_LENGTH)
    label = models.CharField(max_length=LABEL_MAX_LENGTH, blank=True)
    state = models.CharField(max_length=12, choices=State.choices)
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["user", "at"])]
        verbose_name = "device history entry"
        verbose_name_plural = "device history"

    def __str__(self) -> str:
        return f"{self.label or self.device_id[:12]}: {self.state} at {self.at:%Y-%m-%d %H:%M:%S}"
