"""API authentication that does not cost a database query on every heartbeat."""

from __future__ import annotations

import hashlib
import threading
import time

from django.conf import settings
from django.core.cache import cache
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.authtoken.models import Token

from orgs.models import Membership, User

TOKEN_CACHE_SECONDS = 60
# The organization account's scheme (orgs.bearer), and the 401 challenge either class answers with.
BEARER_KEYWORD = "Bearer"
BEARER_CHALLENGE = f'{BEARER_KEYWORD} realm="api"'
_CACHED_FIELDS = ("id", "username", "first_name", "last_name", "email", "is_active", "is_staff", "is_superuser")
# Cached beside the user's fields: the id of the user's organization (None: none), read with the token.
_ORGANIZATION = "organization_id"


def _cache_key(token_key: str) -> str:
    # The token itself never goes to the cache: a cache dump must not hand out credentials.
    return "auth:token:" + hashlib.sha256(token_key.encode()).hexdigest()


class _ProcessCache:
    """Token → user fields for a few seconds in this process: a heartbeat then resolves its
    credentials without any round trip. Other processes learn of a revocation through the shared
    cache within PRESENCE_AUTH_PROCESS_CACHE_SECONDS; this process at once."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, dict]] = {}
        self._lock = threading.Lock()

    def get(self, cache_key: str) -> dict | None:
        entry = self._entries.get(cache_key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, cache_key: str, fields: dict) -> None:
        ttl = settings.PRESENCE_AUTH_PROCESS_CACHE_SECONDS
        if ttl <= 0:
            return
        with self._lock:
            if len(self._entries) > 100_000:
                self._entries.clear()
            self._entries[cache_key] = (time.monotonic() + ttl, fields)

    def forget(self, cache_keys: list[str]) -> None:
        with self._lock:
            for cache_key in cache_keys:
                self._entries.pop(cache_key, None)


_process_cache = _ProcessCache()


def cached_user_fields(key: str) -> dict | None:
    """The cached fields of the active user a token belongs to; None if not cached (or inactive)."""
    cache_key = _cache_key(key)
    fields = _process_cache.get(cache_key)
    if fields is None:
        fields = cache.get(cache_key)
        if fields is not None:
            _process_cache.put(cache_key, fields)
    return fields if fields is not None and fields["is_active"] else None


class CachedTokenAuthentication(TokenAuthentication):
    """DRF tokens, with the token → user lookup cached (in this process for a few seconds, in
    Redis when configured for a minute).

    A revoked token or a deactivated user is dropped from the caches by the receivers below; the
    minute bounds what any missed invalidation could cost.
    """

    def authenticate_header(self, request) -> str:
        # DRF asks the first authentication class for the 401's challenge: a client that sent a
        # bearer token (the organization account) is told to send a valid bearer token.
        if get_authorization_header(request).split()[:1] == [BEARER_KEYWORD.encode()]:
            return BEARER_CHALLENGE
        return super().authenticate_header(request)

    def authenticate_credentials(self, key: str):
        cached = cached_user_fields(key)
        if cached is not None:
            return cached_user(cached), key
        # DRF's lookup, with the user's membership in the same query: a live connection needs the
        # user's organization next, and then has it without a query of its own.
        model = self.get_model()
        try:
            token = model.objects.select_related("user__membership").get(key=key)
        except model.DoesNotExist:
            raise exceptions.AuthenticationFailed(_("Invalid token.")) from None
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        fields = _remember({key: token.user})[key]
        token.user.known_organization_id = fields[_ORGANIZATION]
        return token.user, token

    def users_for(self, keys: list[str]) -> dict[str, User]:
        """The active users of many tokens at once (a token unknown, or of an inactive user, left
        out): from this process's cache, then one read of the shared cache, then one query for
        the rest, which are cached in turn. Many live connections signing in at once (a reconnect
        storm) cost a few round trips together instead of three each."""
        found: dict[str, dict] = {}
        for key in keys:
            if (fields := _process_cache.get(_cache_key(key))) is not None:
                found[key] = fields
        missing = [key for key in keys if key not in found]
        if missing:
            shared = cache.get_many([_cache_key(key) for key in missing])
            for key in missing:
                if (fields := shared.get(_cache_key(key))) is not None:
                    _process_cache.put(_cache_key(key), fields)
                    found[key] = fields
        unknown = [key for key in keys if key not in found]
        if unknown:
            tokens = self.get_model().objects.select_related("user__membership").filter(key__in=unknown)
            found |= _remember({token.key: token.user for token in tokens if token.user.is_active})
        return {key: cached_user(fields) for key, fields in found.items() if fields["is_active"]}


def _remember(users: dict[str, User]) -> dict[str, dict]:
    """Cache the users of these tokens (read with their membership), and answer their cached fields."""
    remembered = {}
    for key, user in users.items():
        membership = getattr(user, "membership", None)
        fields = {name: getattr(user, name) for name in _CACHED_FIELDS} | {"public_id": str(user.public_id)}
        fields[_ORGANIZATION] = membership.organization_id if membership is not None else None
        remembered[key] = fields
    if remembered:
        cache.set_many({_cache_key(key): fields for key, fields in remembered.items()}, TOKEN_CACHE_SECONDS)
        for key, fields in remembered.items():
            _process_cache.put(_cache_key(key), fields)
    return remembered


def cached_user(fields: dict) -> User:
    """A user built from cached fields: enough for authentication and the hot path; related
    objects load from the database on first use. It refuses to be saved (it has no password)."""
    user = User(**{name: value for name, value in fields.items() if name != _ORGANIZATION})
    if _ORGANIZATION in fields:  # entries cached before it was are without
        user.known_organization_id = fields[_ORGANIZATION]
    user._state.adding = False
    user._state.db = "default"
    user.partial_from_cache = True
    return user


def forget_tokens_of(user_id: int) -> None:
    keys = [_cache_key(key) for key in Token.objects.filter(user_id=user_id).values_list("key", flat=True)]
    if keys:
        cache.delete_many(keys)
        _process_cache.forget(keys)


@receiver(post_delete, sender=Token)
def _forget_deleted_token(sender, instance: Token, **kwargs) -> None:
    cache.delete(_cache_key(instance.key))
    _process_cache.forget([_cache_key(instance.key)])


@receiver(post_save, sender=User)
def _forget_changed_user(sender, instance: User, created: bool, **kwargs) -> None:
    if not created:
        forget_tokens_of(instance.pk)


@receiver(post_save, sender=Membership)
@receiver(post_delete, sender=Membership)
def _forget_changed_membership(sender, instance: Membership, **kwargs) -> None:
    # The user's organization is cached with their tokens.
    forget_tokens_of(instance.user_id)


def known_organization(user: User) -> tuple[bool, int | None]:
    """Whether the user's organization was read with their token (False for a user signed in
    otherwise), and its id then (None: they belong to none)."""
    if hasattr(user, "known_organization_id"):
        return True, user.known_organization_id
    return False, None
