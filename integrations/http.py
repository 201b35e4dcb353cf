"""HTTP for the integrations: one pooled httpx client per process, and one error type.

Every failure to reach Matrix or Graph becomes a `DeliveryError` that says whether trying again
can help and how long the peer asked to wait, so the dispatcher decides retries in one place.
"""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass

import httpx
import requests
from django.conf import settings


@dataclass
class DeliveryError(Exception):
    message: str
    retryable: bool
    retry_after: float | None = None
    status_code: int | None = None

    def __str__(self) -> str:
        return self.message


_lock = threading.Lock()
_client: httpx.Client | None = None
_client_pid: int | None = None


def tls_verify() -> ssl.SSLContext | bool:
    """Trust INTEGRATIONS_CA_BUNDLE (a private PKI, or a test's own CA), else the default store."""
    if settings.INTEGRATIONS_CA_BUNDLE:
        return ssl.create_default_context(cafile=settings.INTEGRATIONS_CA_BUNDLE)
    return True


class RequestsSession(requests.Session):
    """The requests session msal signs in with: our timeout, and INTEGRATIONS_CA_BUNDLE trusted
    even where REQUESTS_CA_BUNDLE is set (requests lets that variable override a session's
    `verify`)."""

    def __init__(self) -> None:
        super().__init__()
        self.ca_bundle = settings.INTEGRATIONS_CA_BUNDLE
        self.timeout = settings.INTEGRATIONS_HTTP_TIMEOUT_SECONDS

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, **kwargs)

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self.ca_bundle:
            merged["verify"] = self.ca_bundle
        return merged


def client() -> httpx.Client:
    global _client, _client_pid
    with _lock:
        # A forked worker must not share its parent's connections.
        if _client is None or _client_pid != os.getpid():
            _client = httpx.Client(
                timeout=httpx.Timeout(settings.INTEGRATIONS_HTTP_TIMEOUT_SECONDS), verify=tls_verify()
            )
            _client_pid = os.getpid()
        return _client


def reset_client() -> None:
    """Drop the pooled client (after the TLS settings changed, e.g. in tests)."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None


def request(method: str, url: str, **kwargs) -> httpx.Response:
    """Send a request; a network failure is a retryable DeliveryError."""
    try:
        return client().request(method, url, **kwargs)
    except httpx.HTTPError as error:
        raise DeliveryError(f"{method} {url}: {error!r}", retryable=True) from error


def retry_after_header(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: Graph sends seconds, the backoff schedule covers the rest


def error_of(response: httpx.Response, retry_after: float | None = None) -> DeliveryError:
    """The DeliveryError of an unsuccessful response: 429 and 5xx may be tried again."""
    status = response.status_code
    retryable = status == 429 or status >= 500
    body = response.text[:500]
    return DeliveryError(
        f"{response.request.method} {response.request.url.path}: HTTP {status} {body}",
        retryable=retryable,
        retry_after=retry_after if retry_after is not None else retry_after_header(response),
        status_code=status,
    )
