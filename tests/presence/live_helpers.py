"""Helpers shared by the live presence tests (websocket, SSE, several processes)."""

from __future__ import annotations

from django.utils import timezone
from rest_framework.authtoken.models import Token

from orgs.models import User
from presence import services


def token_of(user: User) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def settle(*users: User) -> None:
    """Give the users a stored presence now, so that nobody's first read publishes it mid-test."""
    services.fresh_presence_of(list(users), timezone.now())


def register_device(user: User, installation_id: str = "laptop") -> str:
    device, _ = services.register_device(user, installation_id)
    return device.device_id
