"""Secrets of the integrations (Microsoft client secrets, Matrix appservice tokens) at rest.

Encrypted with Fernet under a key derived from INTEGRATIONS_SECRET_KEY (by default from
SECRET_KEY), so a database dump alone does not hand out credentials to a customer's tenant.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class SecretUnreadable(Exception):
    """The stored secret was encrypted under another key (the key setting changed)."""


def _fernet() -> Fernet:
    digest = hashlib.sha256(b"sparks-integrations\x00" + settings.INTEGRATIONS_SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode() if plaintext else ""


def decrypt(ciphertext: str) -> str:
    if not ciphertext:
        return ""
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as error:
        raise SecretUnreadable("enter the secret again in the admin") from error
