"""HTTP for the integrations: one pooled httpx client per process, and one error type.

Every failure to reach Matrix or Graph becomes a `DeliveryError` that says whether trying again
can help and how long the peer asked to wait, so the dispatcher decides retries in one place.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import httpx
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


def tls_verify() -> str | bool:
    """A CA bundle file (a private PKI, or a test's own CA) or the default trust store."""
    return settings.INTEGRATIONS_CA_BUNDLE or True


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
