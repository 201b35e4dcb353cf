"""API authentication that does not cost a database query on every heartbeat."""

from __future__ import annotations

import hashlib

from django.core.cache import cache
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from orgs.models import User

TOKEN_CACHE_SECONDS = 60
_CACHED_FIELDS = ("id", "username", "first_name", "last_name", "email", "is_active", "is_staff", "is_superuser")


def _cache_key(token_key: str) -> str:
    # The token itself never goes to the cache: a cache dump must not hand out credentials.
    return "auth:token:" + hashlib.sha256(token_key.encode()).hexdigest()


class CachedTokenAuthentication(TokenAuthentication):
    """DRF tokens, with the token → user lookup cached for a minute (in Redis when configured).

    A revoked token or a deactivated user is dropped from the cache at once by the receivers
    below; the minute bounds what any missed invalidation could cost.
    """

    def authenticate_credentials(self, key: str):
        cached = cache.get(_cache_key(key))
        if cached is not None and cached["is_active"]:
            return cached_user(cached), key
        user, token = super().authenticate_credentials(key)
        cache.set(
            _cache_key(key),
            {name: getattr(user, name) for name in _CACHED_FIELDS} | {"public_id": str(user.public_id)},
            TOKEN_CACHE_SECONDS,
        )
        return user, token


def cached_user(fields: dict) -> User:
    """A user built from cached fields: enough for authentication and the hot path; related
    objects load from the database on first use. It refuses to be saved (it has no password)."""
    user = User(**fields)
    user._state.adding = False
    user._state.db = "default"
    user.partial_from_cache = True
    return user


def forget_tokens_of(user_id: int) -> None:
    keys = [_cache_key(key) for key in Token.objects.filter(user_id=user_id).values_list("key", flat=True)]
    if keys:
        cache.delete_many(keys)


@receiver(post_delete, sender=Token)
def _forget_deleted_token(sender, instance: Token, **kwargs) -> None:
    cache.delete(_cache_key(instance.key))


@receiver(post_save, sender=User)
def _forget_changed_user(sender, instance: User, created: bool, **kwargs) -> None:
    if not created:
        forget_tokens_of(instance.pk)
