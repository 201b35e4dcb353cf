"""The user's Entra object id comes with the sign-in claims."""

from __future__ import annotations

import pytest

from integrations.models import ExternalAccount
from orgs.services import user_from_claims

pytestmark = pytest.mark.django_db

OBJECT_ID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def claims(**extra) -> dict:
    return {"sub": "kc-user-1", "preferred_username": "dana", "organization": "demo", **extra}


def test_signing_in_with_an_oid_claim_records_the_entra_object_id(organization):
    user = user_from_claims(claims(oid=OBJECT_ID.upper()))

    assert ExternalAccount.objects.get(user=user).microsoft_object_id == OBJECT_ID


def test_a_changed_oid_on_the_next_sign_in_replaces_the_old_one(organization):
    user = user_from_claims(claims(oid=OBJECT_ID))
    other = "11111111-2222-3333-4444-555555555555"

    user_from_claims(claims(oid=other))

    assert ExternalAccount.objects.get(user=user).microsoft_object_id == other


def test_an_oid_that_is_not_a_guid_is_ignored(organization):
    user = user_from_claims(claims(oid="not-a-guid'; drop table"))

    assert not ExternalAccount.objects.filter(user=user).exists()


def test_the_claim_name_is_a_setting(organization, settings):
    settings.OIDC_ENTRA_OBJECT_ID_CLAIM = "entra_oid"

    user = user_from_claims(claims(entra_oid=OBJECT_ID, oid="11111111-2222-3333-4444-555555555555"))

    assert ExternalAccount.objects.get(user=user).microsoft_object_id == OBJECT_ID
