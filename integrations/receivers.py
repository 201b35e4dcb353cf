"""What the integrations take from elsewhere: the user's Entra object id from the sign-in claims."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.dispatch import receiver

from integrations.models import ExternalAccount
from orgs.models import User
from orgs.signals import claims_applied

# Entra object ids are GUIDs; anything else in the claim is not one.
_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@receiver(claims_applied)
def _take_entra_object_id(sender, user: User, claims: Mapping[str, Any], **kwargs) -> None:
    """Keycloak brokering Entra ID passes the user's object id on (a mapper to the claim named by
    OIDC_ENTRA_OBJECT_ID_CLAIM, `oid` by default); the admin can set it by hand otherwise."""
    object_id = claims.get(settings.OIDC_ENTRA_OBJECT_ID_CLAIM)
    if not isinstance(object_id, str) or not _OBJECT_ID.match(object_id):
        return
    object_id = object_id.lower()
    account = ExternalAccount.objects.filter(user=user).first()
    if account is None:
        ExternalAccount.objects.create(user=user, microsoft_object_id=object_id)
    elif account.microsoft_object_id != object_id:
        account.microsoft_object_id = object_id
        account.save(update_fields=["microsoft_object_id"])
