"""Endpoints the sign-in provider calls (not pages people open)."""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from orgs import logout, oidc

logger = logging.getLogger(__name__)


def _answer(status: int, body: dict[str, str] | None = None) -> JsonResponse:
    response = JsonResponse(body or {}, status=status)
    # Back-Channel Logout 1.0, section 2.8: the answer is not to be cached.
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt  # the provider POSTs server to server: no browser, no cookie, no CSRF token
def backchannel_logout(request: HttpRequest) -> JsonResponse:
    """Keycloak's "Backchannel logout URL": `logout_token=<JWT>`, form-encoded.

    200 once the session (or every session of the user) has ended; 400 naming what is wrong with
    the logout token; 503 when the provider's keys cannot be fetched to check it (the provider
    retries or reports it).
    """
    if request.method != "POST":
        response = _answer(405, {"error": "method_not_allowed", "detail": "Send the logout token with POST."})
        response["Allow"] = "POST"
        return response
    if not oidc.enabled():
        detail = "Sign-in with the organization account is not configured."
        return _answer(404, {"error": "not_found", "detail": detail})
    token = request.POST.get("logout_token", "")
    try:
        verified = logout.verify_logout_token(token)
    except logout.InvalidLogoutToken as error:
        logger.warning("Back-channel logout refused: %s", error.detail)
        return _answer(400, {"error": error.error, "detail": error.detail})
    except oidc.ProviderUnavailable as error:
        logger.warning("Back-channel logout not checked, provider unavailable: %s", error)
        detail = "The provider's signing keys cannot be fetched to check the logout token; retry shortly."
        return _answer(503, {"error": "provider_unavailable", "detail": detail})
    logout.end_provider_session(verified)
    return _answer(200)
