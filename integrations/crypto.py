"""Secrets of the integrations (Microsoft client secrets, Matrix appservice tokens) at rest.

Encrypted with Fernet, so a database dump alone does not hand out credentials to a customer's
tenant. The keys come from INTEGRATIONS_SECRET_KEYS (several, comma-separated, for rotation) or
INTEGRATIONS_SECRET_KEY (one; by default derived from SECRET_KEY); each is any string, from which
a Fernet key is derived. New secrets are encrypted under the first key; a secret encrypted under
any of them is read (MultiFernet). `manage.py rotate_integration_secrets` re-encrypts the stored
ones under the first key, after which the old keys can be removed.
"""

from __future__ import annotations

import base64
import functools
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUnreadable(Exception):
    """The stored secret was encrypted under a key that is not configured (any more)."""


def _fernet(key: str) -> Fernet:
    digest = hashlib.sha256(b"sparks-integrations\x00" + key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


@functools.lru_cache(maxsize=8)
def _fernets(keys: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    """Every configured key (to read) and the first (to write); cached per key list, as the
    derivation costs a hash per key and the settings may change (tests override them)."""
    fernets = [_fernet(key) for key in keys]
    return MultiFernet(fernets), fernets[0]


def _configured() -> tuple[MultiFernet, Fernet]:
    return _fernets(tuple(settings.INTEGRATIONS_SECRET_KEYS))


def encrypt(plaintext: str) -> str:
    return _configured()[0].encrypt(plaintext.encode()).decode() if plaintext else ""


def decrypt(ciphertext: str) -> str:
    if not ciphertext:
        return ""
    try:
        return _configured()[0].decrypt(ciphertext.encode()).decode()
    except InvalidToken as error:
        raise SecretUnreadable("no configured key reads it: enter the secret again in the admin") from error


def is_under_first_key(ciphertext: str) -> bool:
    """Whether the first key (the one new secrets get) reads it already: nothing to rotate."""
    try:
        _configured()[1].decrypt(ciphertext.encode())
    except InvalidToken:
        return False
    return True


def reencrypt(ciphertext: str) -> str:
    """The same secret encrypted under the first key; SecretUnreadable if no configured key reads it."""
    try:
        return _configured()[0].rotate(ciphertext.encode()).decode()
    except InvalidToken as error:
        raise SecretUnreadable("no configured key reads it: enter the secret again in the admin") from error
