"""Users, organizations, their presence policy and who belongs where."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

# Bounds of an organization's timeout overrides, in seconds: below 30 s a device would flicker
# offline between two heartbeats of a busy network; above an hour "available" stops meaning much.
DEVICE_TIMEOUT_BOUNDS = (30, 3600)
IDLE_TIMEOUT_BOUNDS = (30, 3600)


class User(AbstractUser):
    # What the API shows as `user_id`: not the row number, so ids say nothing about how many
    # users exist or when someone joined.
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # The OIDC subject, the stable key for sign-in with the organization account.
    oidc_subject = models.CharField(max_length=255, unique=True, null=True, blank=True)

    @property
    def display_name(self) -> str:
        return self.get_full_name() or self.username

    def save(self, *args, **kwargs) -> None:
        if getattr(self, "partial_from_cache", False):
            raise RuntimeError("A user rebuilt from the authentication cache cannot be saved.")
        super().save(*args, **kwargs)


class Organization(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        creating = self._state.adding
        super().save(*args, **kwargs)
        if creating:
            # Every organization has a policy row, so that admins see and edit what applies.
            PresencePolicy.objects.get_or_create(organization=self)


class PresencePolicy(models.Model):
    """What an organization allows and defaults to; users choose within it."""

    class Priority(models.TextChoices):
        """Which of calendar busy and the manual status wins (presence's `vocabulary.Priority`)."""

        CALENDAR_FIRST = "calendar_first", "calendar first"
        MANUAL_FIRST = "manual_first", "manual first"

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, primary_key=True, related_name="policy")
    device_timeout_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(DEVICE_TIMEOUT_BOUNDS[0]), MaxValueValidator(DEVICE_TIMEOUT_BOUNDS[1])],
        help_text="Seconds without a signal after which a device no longer counts. Empty: the server default.",
    )
    idle_timeout_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(IDLE_TIMEOUT_BOUNDS[0]), MaxValueValidator(IDLE_TIMEOUT_BOUNDS[1])],
        help_text="Seconds without reported activity after which a device counts as idle (away). "
        "Empty: the server default.",
    )
    allow_calendar = models.BooleanField(default=True, help_text="Calendar busy blocks may make users busy.")
    allow_microsoft = models.BooleanField(default=True, help_text="Imported Microsoft presence may be used.")
    allow_appear_offline = models.BooleanField(
        default=True,
        help_text='Members may choose to appear offline; when not, a manual "offline" is refused and an existing '
        "one stops applying.",
    )
    allow_external_dispatch = models.BooleanField(
        default=True, help_text="Presence may be published to Matrix and Microsoft Teams."
    )
    default_priority = models.CharField(
        max_length=20,
        choices=Priority.choices,
        default=Priority.CALENDAR_FIRST,
        help_text="Which wins for users who did not choose: calendar busy or the manual status.",
    )

    class Meta:
        verbose_name_plural = "presence policies"

    def __str__(self) -> str:
        return f"Presence policy of {self.organization}"

    def clean(self) -> None:
        super().clean()
        # The same rule the settings enforce for the server default: a timeout a heartbeat cannot
        # beat would turn every device of the organization offline between two heartbeats.
        heartbeat = settings.PRESENCE_HEARTBEAT_INTERVAL_SECONDS
        if self.device_timeout_seconds is not None and self.device_timeout_seconds <= heartbeat:
            raise ValidationError(
                {
                    "device_timeout_seconds": f"Must be longer than the clients' heartbeat interval ({heartbeat} s), "
                    "or every device would time out between two heartbeats."
                }
            )


class Membership(models.Model):
    class Role(models.TextChoices):
        MEMBER = "member"
        ADMIN = "admin"

    # One organization per user: the organization decides the presence policy that applies to
    # the user, and a user under two policies would have no single honest status.
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["organization", "user"])]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class ProviderSession(models.Model):
    """Which browser session here belongs to which session at the sign-in provider.

    Recorded at each browser sign-in with the organization account (the ID token's `sid` and `sub`),
    so that the provider's back-channel logout can end the matching sessions here. A row goes when
    its session is signed out, here or at the provider; rows of sessions that merely expired are
    pruned at later sign-ins.
    """

    session_key = models.CharField(max_length=40, unique=True)
    # The provider's session id (`sid`); empty when the provider's ID tokens carry none.
    provider_sid = models.CharField(max_length=255, blank=True, db_index=True)
    subject = models.CharField(max_length=255, db_index=True)
    # Renewed at each sign-in of the session (the silent re-checks included), for the pruning.
    recorded_at = models.DateTimeField(auto_now=True, db_index=True)

    def __str__(self) -> str:
        return f"Session of {self.subject} (provider session {self.provider_sid or 'unknown'})"
