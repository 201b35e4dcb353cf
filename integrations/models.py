"""Per-organization connections to Matrix and Microsoft, user identities there, and what was sent."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from integrations import crypto
from orgs.models import Organization


class MatrixHomeserver(models.Model):
    """The organization's Matrix homeserver, published to as a registered application service."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, primary_key=True, related_name="matrix_homeserver"
    )
    base_url = models.URLField(help_text="Client-server API base URL, e.g. https://matrix.example.org")
    server_name = models.CharField(max_length=255, help_text="The homeserver's name, e.g. example.org")
    as_token_encrypted = models.TextField(blank=True, editable=False)
    user_id_template = models.CharField(
        max_length=255,
        default="@{username}:{server_name}",
        help_text="How a SPARKS user's Matrix id is made; {username} and {server_name} are filled in. "
        "A user's own Matrix id (External accounts) overrides it.",
    )
    enabled = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"Matrix homeserver {self.server_name} of {self.organization}"

    @property
    def as_token(self) -> str:
        return crypto.decrypt(self.as_token_encrypted)

    @as_token.setter
    def as_token(self, value: str) -> None:
        self.as_token_encrypted = crypto.encrypt(value)

    def matrix_user_id(self, user) -> str:
        return self.user_id_template.format(username=user.username.lower(), server_name=self.server_name)


class MicrosoftTenant(models.Model):
    """The organization's Entra tenant and the app registration SPARKS uses there."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, primary_key=True, related_name="microsoft_tenant"
    )
    tenant_id = models.CharField(max_length=64, help_text="Directory (tenant) id.")
    client_id = models.CharField(max_length=64, help_text="Application (client) id of the app registration.")
    client_secret_encrypted = models.TextField(blank=True, editable=False)
    enabled = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"Microsoft tenant {self.tenant_id} of {self.organization}"

    @property
    def client_secret(self) -> str:
        return crypto.decrypt(self.client_secret_encrypted)

    @client_secret.setter
    def client_secret(self, value: str) -> None:
        self.client_secret_encrypted = crypto.encrypt(value)


class ExternalAccount(models.Model):
    """Who the user is on Matrix and in Entra. Filled by sign-in (the OIDC `oid` claim) or the admin."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="external_account"
    )
    matrix_user_id = models.CharField(
        max_length=255, blank=True, help_text="Empty: made from the homeserver's template."
    )
    microsoft_object_id = models.CharField(
        max_length=64, blank=True, db_index=True, help_text="Entra object id (the `oid` claim)."
    )

    def __str__(self) -> str:
        return f"External accounts of {self.user}"


class DispatchTarget(models.TextChoices):
    MATRIX = "matrix", "Matrix"
    MICROSOFT = "microsoft", "Microsoft Teams"


class DispatchState(models.Model):
    """Per user and target: the presence that should be published and the one that was.

    Shared by every worker through the database, so whichever process delivers sends only the
    newest state, and an unchanged state is not sent again.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dispatch_states")
    target = models.CharField(max_length=10, choices=DispatchTarget.choices)
    # {"status", "activity", "status_msg"} in SPARKS' vocabulary; offline also means "withdrawn".
    desired = models.JSONField()
    desired_at = models.DateTimeField()
    sent = models.JSONField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Failed attempts since the last success.")
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "target"], name="one_dispatch_state_per_target")]
        indexes = [models.Index(fields=["target", "sent_at"])]

    def __str__(self) -> str:
        return f"{self.user} → {self.get_target_display()}"

    @property
    def pending(self) -> bool:
        return self.desired != self.sent


class GraphPublication(models.Model):
    """What SPARKS itself put into a user's Microsoft Graph presence, and until when.

    Graph's presence of a user combines every source (each Teams client, each application's
    session, the user's one preferred presence, which the user's own Teams choice shares with
    applications), and nothing in Graph says which part is SPARKS'. This record does: dispatch
    sets and clears only what it shows as SPARKS' own (never the user's own preferred presence),
    renews it before it expires, and the import tells SPARKS' own presence read back from what
    Teams got elsewhere (`integrations.mapping.is_own_echo`). Written by `integrations.teams` on
    every successful call; a row that ended is kept only as long as the echo rule looks at it.
    """

    class Kind(models.TextChoices):
        SESSION = "session", "presence session"
        PREFERRED = "preferred", "preferred presence"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="graph_publications")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    availability = models.CharField(max_length=40)
    activity = models.CharField(max_length=40)
    set_at = models.DateTimeField(help_text="When Graph accepted this pair first.")
    refreshed_at = models.DateTimeField(help_text="When Graph last accepted it (set again to renew it).")
    expires_at = models.DateTimeField(help_text="When Graph lets it lapse unless SPARKS sets it again.")
    ended_at = models.DateTimeField(
        null=True, blank=True, help_text="When SPARKS cleared or replaced it, or it lapsed; empty while live."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "kind"], condition=models.Q(ended_at__isnull=True), name="one_open_graph_publication"
            )
        ]
        indexes = [
            models.Index(fields=["expires_at"], condition=models.Q(ended_at__isnull=True), name="graph_publication_due")
        ]

    def __str__(self) -> str:
        return f"{self.user}: {self.get_kind_display()} {self.availability}/{self.activity}"
