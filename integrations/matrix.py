"""Matrix: publishing presence as the user, through the organization's application service.

The appservice's `as_token` authenticates, and `?user_id=` masquerades as a user in the
appservice's namespace, so no personal access token is ever stored.
"""

from __future__ import annotations

from urllib.parse import quote

from django.core.cache import cache

from integrations import http
from integrations.mapping import MATRIX_BUSY_FEATURE, MatrixPresence

_FEATURES_CACHE_SECONDS = 3600


def _headers(as_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {as_token}"}


def supports_busy(base_url: str) -> bool:
    """Whether the homeserver accepts MSC3026 busy presence (cached per homeserver for an hour)."""
    key = f"integrations:matrix:busy:{base_url}"
    cached = cache.get(key)
    if cached is not None:
        return cached
    response = http.request("GET", f"{base_url.rstrip('/')}/_matrix/client/versions")
    if response.status_code != 200:
        raise http.error_of(response)
    supported = bool((response.json().get("unstable_features") or {}).get(MATRIX_BUSY_FEATURE))
    cache.set(key, supported, _FEATURES_CACHE_SECONDS)
    return supported


def set_presence(base_url: str, as_token: str, user_id: str, presence: MatrixPresence) -> None:
    url = f"{base_url.rstrip('/')}/_matrix/client/v3/presence/{quote(user_id, safe='')}/status"
    response = http.request("PUT", url, params={"user_id": user_id}, headers=_headers(as_token), json=presence.body())
    if response.status_code == 200:
        return
    retry_after = None
    if response.status_code == 429:
        # Synapse says how long to wait in the body (M_LIMIT_EXCEEDED), not in a header.
        try:
            retry_after_ms = response.json().get("retry_after_ms")
        except ValueError:
            retry_after_ms = None
        retry_after = retry_after_ms / 1000 if isinstance(retry_after_ms, int | float) else None
    raise http.error_of(response, retry_after)
