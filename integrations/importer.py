"""Importing users' Microsoft presence as an input of aggregation.

Each imported value enters through `presence.services.record_microsoft_presence` (the one path:
service → recompute → publish); what it means for the decision is the engine's business. What
Graph reports includes SPARKS' own publication (its session, the preferred presence it set): a
value that publication explains (`integrations.mapping.is_own_echo`) is recorded as an echo and
adds nothing, so SPARKS never takes its own do-not-disturb back as the user's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from integrations import mapping, microsoft, teams
from integrations.http import DeliveryError
from integrations.models import MicrosoftTenant
from orgs.models import User
from presence import services


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    imported: int
    retry_after: float | None = None
    error: str = ""


def importing_users(tenant: MicrosoftTenant) -> dict[str, User]:
    """Users of the tenant's organization who include Microsoft presence, by Entra object id."""
    policy = getattr(tenant.organization, "policy", None)
    if (
        not settings.PRESENCE_USE_AGGREGATOR
        or not tenant.enabled
        or (policy is not None and not policy.allow_microsoft)
    ):
        return {}
    users = (
        User.objects.filter(
            membership__organization_id=tenant.organization_id,
            presence_preferences__include_microsoft_presence=True,
            is_active=True,
        )
        .exclude(external_account__microsoft_object_id="")
        .exclude(external_account__isnull=True)
        .select_related("external_account")
    )
    return {user.external_account.microsoft_object_id.lower(): user for user in users}


def import_tenant(tenant: MicrosoftTenant, now: datetime | None = None) -> ImportOutcome:
    """Read the presence of every importing user of the tenant, in batches, and record it.

    Throttled (429), it stops and says how long Graph asked to wait; the batches already read
    are recorded.
    """
    throttle_key = f"integrations:import:throttled:{tenant.organization_id}"
    if cache.get(throttle_key):
        return ImportOutcome(0, error="throttled by Microsoft Graph; waiting as asked")
    users = importing_users(tenant)
    if not users:
        return ImportOutcome(0)
    credentials = microsoft.Credentials(tenant.tenant_id, tenant.client_id, tenant.client_secret)
    object_ids = sorted(users)
    imported = 0
    for start in range(0, len(object_ids), microsoft.PRESENCE_BATCH_SIZE):
        batch = object_ids[start : start + microsoft.PRESENCE_BATCH_SIZE]
        try:
            presences = microsoft.get_presences(credentials, batch)
        except DeliveryError as error:
            if error.retryable:
                # The next beat run before Graph's Retry-After (or a short pause) skips this tenant.
                retry_after = error.retry_after or 30.0
                cache.set(throttle_key, 1, timeout=max(1, int(retry_after + 0.999)))
                return ImportOutcome(imported, retry_after=retry_after, error=str(error))
            return ImportOutcome(imported, error=str(error))
        observed_at = now or timezone.now()
        own = teams.own_publications([users[object_id].pk for object_id in batch], observed_at)
        for presence in presences:
            user = users.get(presence.object_id.lower())
            if user is not None:
                echo = mapping.is_own_echo(presence.availability, presence.activity, observed_at, own.get(user.pk, ()))
                services.record_microsoft_presence(user, presence.availability, presence.activity, observed_at, echo)
                imported += 1
    return ImportOutcome(imported)


def tenants_to_import() -> list[int]:
    return list(MicrosoftTenant.objects.filter(enabled=True).values_list("organization_id", flat=True))
