"""Rotating the key of the integrations' stored secrets: INTEGRATIONS_SECRET_KEYS and
`manage.py rotate_integration_secrets`."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from integrations import crypto
from integrations.models import MatrixHomeserver, MicrosoftTenant
from tests.factories import MatrixHomeserverFactory, MicrosoftTenantFactory

PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def use_keys(settings):
    def use(*keys: str) -> None:
        settings.INTEGRATIONS_SECRET_KEYS = list(keys)

    return use


@pytest.fixture
def stored(use_keys, organization):
    """A Matrix homeserver and a Microsoft tenant whose secrets were written under the key "old"."""
    use_keys("old")
    homeserver = MatrixHomeserverFactory(organization=organization, as_token="matrix-as-token")
    tenant = MicrosoftTenantFactory(organization=organization, client_secret="entra-client-secret")
    return homeserver, tenant


def reload(homeserver: MatrixHomeserver, tenant: MicrosoftTenant) -> tuple[MatrixHomeserver, MicrosoftTenant]:
    return MatrixHomeserver.objects.get(pk=homeserver.pk), MicrosoftTenant.objects.get(pk=tenant.pk)


def rotate() -> str:
    out = io.StringIO()
    call_command("rotate_integration_secrets", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_a_new_key_first_reads_the_old_secrets_rotates_them_and_the_old_key_can_go(stored, use_keys):
    homeserver, tenant = stored
    before = (homeserver.as_token_encrypted, tenant.client_secret_encrypted)

    use_keys("new", "old")
    homeserver, tenant = reload(homeserver, tenant)
    assert (homeserver.as_token, tenant.client_secret) == ("matrix-as-token", "entra-client-secret")

    assert "Re-encrypted 2 secret(s) under the first key; 0 already were; 0 unreadable." in rotate()
    homeserver, tenant = reload(homeserver, tenant)
    after = (homeserver.as_token_encrypted, tenant.client_secret_encrypted)
    assert after[0] != before[0] and after[1] != before[1]

    # Idempotent: nothing left to do, nothing rewritten.
    assert "Re-encrypted 0 secret(s) under the first key; 2 already were; 0 unreadable." in rotate()
    homeserver, tenant = reload(homeserver, tenant)
    assert (homeserver.as_token_encrypted, tenant.client_secret_encrypted) == after

    use_keys("new")
    homeserver, tenant = reload(homeserver, tenant)
    assert (homeserver.as_token, tenant.client_secret) == ("matrix-as-token", "entra-client-secret")


@pytest.mark.django_db
def test_without_rotation_the_old_key_alone_no_longer_reads_them(stored, use_keys):
    homeserver, tenant = stored

    use_keys("new")
    homeserver, _ = reload(homeserver, tenant)

    with pytest.raises(crypto.SecretUnreadable):
        _ = homeserver.as_token


@pytest.mark.django_db
def test_new_secrets_are_encrypted_under_the_first_key(use_keys, organization):
    use_keys("new", "old")
    tenant = MicrosoftTenantFactory(organization=organization, client_secret="written-after-the-new-key")

    use_keys("new")
    assert MicrosoftTenant.objects.get(pk=tenant.pk).client_secret == "written-after-the-new-key"
    use_keys("old")
    with pytest.raises(crypto.SecretUnreadable):
        _ = MicrosoftTenant.objects.get(pk=tenant.pk).client_secret


@pytest.mark.django_db
def test_a_secret_no_key_reads_is_reported_and_the_others_are_rotated(use_keys, organization, other_organization):
    use_keys("lost")
    MatrixHomeserverFactory(organization=other_organization, as_token="under-a-lost-key")
    use_keys("old")
    tenant = MicrosoftTenantFactory(organization=organization, client_secret="entra-client-secret")
    use_keys("new", "old")
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match=r"1 secret\(s\) could not be read with any key of INTEGRATIONS_SECRET_KEYS"):
        call_command("rotate_integration_secrets", stdout=out, stderr=err)

    assert "Re-encrypted 1 secret(s) under the first key; 0 already were; 1 unreadable." in out.getvalue()
    assert "Matrix homeserver" in err.getvalue()
    assert other_organization.name in err.getvalue()
    use_keys("new")
    assert MicrosoftTenant.objects.get(pk=tenant.pk).client_secret == "entra-client-secret"


@pytest.mark.django_db
def test_secrets_stored_before_rotation_existed_are_read_with_the_same_key(use_keys, organization):
    """What the single-key version wrote (Fernet under SHA-256 of the key) is read unchanged."""
    key = "integrations:an-existing-deployment"
    digest = hashlib.sha256(b"sparks-integrations\x00" + key.encode()).digest()
    legacy = Fernet(base64.urlsafe_b64encode(digest)).encrypt(b"stored-long-ago").decode()
    tenant = MicrosoftTenantFactory(organization=organization, client_secret="")
    MicrosoftTenant.objects.filter(pk=tenant.pk).update(client_secret_encrypted=legacy)

    use_keys(key)

    assert MicrosoftTenant.objects.get(pk=tenant.pk).client_secret == "stored-long-ago"


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, ["integrations:from-the-secret-key"]),
        ({"INTEGRATIONS_SECRET_KEY": "single"}, ["single"]),
        ({"INTEGRATIONS_SECRET_KEY": "single", "INTEGRATIONS_SECRET_KEYS": ""}, ["single"]),
        ({"INTEGRATIONS_SECRET_KEY": "single", "INTEGRATIONS_SECRET_KEYS": "new, old"}, ["new", "old"]),
    ],
)
def test_the_keys_setting_falls_back_to_the_single_key(variables, expected):
    env = {key: value for key, value in os.environ.items() if not key.startswith("INTEGRATIONS_SECRET_KEY")}
    env.update(variables, SECRET_KEY="from-the-secret-key", DJANGO_SETTINGS_MODULE="sparks_site.settings")
    code = "from django.conf import settings; print('|'.join(settings.INTEGRATIONS_SECRET_KEYS))"

    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=PROJECT_DIR, capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.strip().split("|") == expected
