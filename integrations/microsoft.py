"""Microsoft Graph: presence sessions of the application, and reading users' presence.

Tokens come from msal's client-credentials flow, one ConfidentialClientApplication per customer
tenant, created once per process and kept (msal caches the token in it until it expires).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import msal
import requests
from django.conf import settings

from integrations import http

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# getPresencesByUserId takes at most this many ids a request.
PRESENCE_BATCH_SIZE = 650


@dataclass(frozen=True, slots=True)
class Credentials:
    tenant_id: str
    client_id: str
    client_secret: str


_apps_lock = threading.Lock()
_apps: dict[tuple[str, ...], msal.ConfidentialClientApplication] = {}
_apps_pid: int | None = None


def _app(credentials: Credentials) -> msal.ConfidentialClientApplication:
    global _apps_pid
    # A new secret (rotated in the admin) or another login URL is another app object.
    key = (
        settings.MICROSOFT_LOGIN_URL,
        credentials.tenant_id,
        credentials.client_id,
        hashlib.sha256(credentials.client_secret.encode()).hexdigest(),
    )
    with _apps_lock:
        if _apps_pid != os.getpid():
            _apps.clear()
            _apps_pid = os.getpid()
        app = _apps.get(key)
        if app is None:
            try:
                app = msal.ConfidentialClientApplication(
                    credentials.client_id,
                    client_credential=credentials.client_secret,
                    authority=f"{settings.MICROSOFT_LOGIN_URL.rstrip('/')}/{credentials.tenant_id}",
                    # The tenant's own discovery document is fetched either way; the extra
                    # instance check only knows Microsoft's public hosts.
                    instance_discovery=False,
                    http_client=http.RequestsSession(),
                )
            except (requests.RequestException, ValueError) as error:
                raise http.DeliveryError(f"Microsoft sign-in unavailable: {error}", retryable=True) from error
            _apps[key] = app
        return app


def forget_apps() -> None:
    with _apps_lock:
        _apps.clear()


def access_token(credentials: Credentials) -> str:
    app = _app(credentials)
    try:
        result = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
    except requests.RequestException as error:
        raise http.DeliveryError(f"Microsoft sign-in unavailable: {error!r}", retryable=True) from error
    token = result.get("access_token") if isinstance(result, dict) else None
    if not token:
        # Wrong secret, no consent, unknown tenant: an administrator has to act.
        description = (result or {}).get("error_description") or (result or {}).get("error")
        raise http.DeliveryError(f"Microsoft sign-in refused: {description}", retryable=False)
    return token


def _graph(credentials: Credentials, method: str, path: str, body: dict) -> httpx.Response:
    token = access_token(credentials)
    return http.request(
        method,
        f"{settings.MICROSOFT_GRAPH_URL.rstrip('/')}{path}",
        headers={"Authorization": f"Bearer {token}"},
        json=body,
    )


def _expect_ok(response, *also_ok: int) -> None:
    if response.status_code < 300 or response.status_code in also_ok:
        return
    raise http.error_of(response)


def expiration_duration() -> str:
    return f"PT{settings.MICROSOFT_PRESENCE_SESSION_MINUTES}M"


def set_presence(credentials: Credentials, object_id: str, availability: str, activity: str) -> None:
    """The application's presence session for the user (sessionId: the application's client id)."""
    body = {
        "sessionId": credentials.client_id,
        "availability": availability,
        "activity": activity,
        "expirationDuration": expiration_duration(),
    }
    _expect_ok(_graph(credentials, "POST", f"/users/{object_id}/presence/setPresence", body))


def clear_presence(credentials: Credentials, object_id: str) -> None:
    # 404: there was no session to end, which is what was wanted.
    body = {"sessionId": credentials.client_id}
    _expect_ok(_graph(credentials, "POST", f"/users/{object_id}/presence/clearPresence", body), 404)


def set_preferred_presence(credentials: Credentials, object_id: str, availability: str, activity: str) -> None:
    body = {"availability": availability, "activity": activity, "expirationDuration": expiration_duration()}
    _expect_ok(_graph(credentials, "POST", f"/users/{object_id}/presence/setUserPreferredPresence", body))


def clear_preferred_presence(credentials: Credentials, object_id: str) -> None:
    _expect_ok(_graph(credentials, "POST", f"/users/{object_id}/presence/clearUserPreferredPresence", {}), 404)


@dataclass(frozen=True, slots=True)
class ImportedPresence:
    object_id: str
    availability: str
    activity: str


def get_presences(credentials: Credentials, object_ids: Sequence[str]) -> list[ImportedPresence]:
    """Presence of up to PRESENCE_BATCH_SIZE users (application permission Presence.Read.All)."""
    if len(object_ids) > PRESENCE_BATCH_SIZE:
        raise ValueError(f"at most {PRESENCE_BATCH_SIZE} ids a request")
    response = _graph(credentials, "POST", "/communications/getPresencesByUserId", {"ids": list(object_ids)})
    _expect_ok(response)
    presences = []
    for item in response.json().get("value") or []:
        object_id = item.get("id")
        if object_id:
            presences.append(
                ImportedPresence(str(object_id), str(item.get("availability") or ""), str(item.get("activity") or ""))
            )
    return presences
