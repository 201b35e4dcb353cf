"""The server-rendered presence pages: the people page (`/`), Settings → Privacy → "Presence
(server)", and "My presence".

Thin: the privacy form is validated by the API's own serializer and saved by the API's service
(`services.update_preferences`, which recomputes the user's presence at once), so the page and
`PATCH /api/v1/me/privacy` cannot disagree on what is allowed. Signing in and out are the
organization's pages (`orgs.pages`).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_http_methods

from orgs import oidc
from presence import overview, selectors, services
from presence.models import MESSAGE_MAX_LENGTH
from presence.ratelimits import RateLimited
from presence.serializers import PrivacySerializer
from presence.vocabulary import Priority
from sparks_site.errors import flatten_field_errors

# The manual's options, in its order and words.
_OPTIONS = [
    ("use_calendar_busy", "Use calendar busy in aggregated presence", "Calendar busy blocks may make you busy."),
    (
        "include_microsoft_presence",
        "Include Microsoft Graph presence as a source",
        "Your presence read from Microsoft Teams is one of the inputs.",
    ),
    (
        "share_externally",
        "Share aggregated presence externally",
        "The server may publish your presence to Matrix and Microsoft Teams.",
    ),
]
_PRIORITY_LABELS = {
    Priority.CALENDAR_FIRST.value: "Calendar first: a busy calendar block wins over your manual status",
    Priority.MANUAL_FIRST.value: "Manual first: your manual status wins over the calendar",
}
_FORBIDDEN_REASON = "Your organization's presence policy does not allow this."
_STATUS_LABELS = {
    "available": "Available",
    "busy": "Busy",
    "away": "Away",
    "dnd": "Do not disturb",
    "offline": "Offline",
}
_REASON_TEXT = {
    "no_live_device": "No device of yours reported recently.",
    "in_call": "A device of yours is in a SPARKS call.",
    "in_meeting": "A device of yours is in a SPARKS meeting.",
    "manual_dnd_during_call": "You set do not disturb, and it holds during calls.",
    "calendar_busy": "Your calendar has a busy block now.",
    "manual_status": "Your manual status.",
    "microsoft_presence": "Your presence imported from Microsoft Teams.",
    "all_devices_idle_or_hidden": "Every device of yours is idle or hidden.",
    "device_active": "A device of yours is active.",
    "appear_offline": "You chose to appear offline.",
}
# The people page's "clear after" presets, as `<select id="clear-after">` offers them; the page's
# script (`static/presence/people.js`) turns each into `durationSeconds` or `until`.
_CLEAR_AFTER = [
    ("30m", "30 minutes"),
    ("1h", "1 hour"),
    ("2h", "2 hours"),
    ("today", "Today"),
    ("week", "This week"),
    ("never", "Never"),
    ("custom", "Choose date and time…"),
]
# The people page's status menu, in its order; "offline" is offered as "Appear offline".
_STATUS_CHOICES = [
    ("available", "Available"),
    ("busy", "Busy"),
    ("away", "Away"),
    ("dnd", "Do not disturb"),
    ("offline", "Appear offline"),
]


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    label: str
    help: str
    checked: bool
    allowed: bool
    errors: list[str]


def _mode(request: HttpRequest) -> str:
    if not settings.PRESENCE_USE_AGGREGATOR:
        return "classic"
    if not oidc.signed_in_with_organization_account(request):
        return "needs_organization_account"
    return "aggregated"


def _form_data(post) -> dict[str, object]:
    """The form as the API's PATCH body: an unticked (or disabled) box is not sent, so it is off."""
    data: dict[str, object] = {name: name in post for name, _, _ in _OPTIONS}
    data["priority"] = post.get("priority") or None
    return data


@login_required
@require_http_methods(["GET", "POST"])
def privacy_settings(request: HttpRequest) -> HttpResponse:
    mode = _mode(request)
    context: dict[str, object] = {"mode": mode, "oidc_url": oidc.sign_in_url(request.path) if oidc.enabled() else ""}
    if mode != "aggregated":
        return render(request, "pages/privacy.html", context, status=200 if request.method == "GET" else 409)

    policy = selectors.policy_of(selectors.organization_of(request.user))
    preferences = selectors.preferences_of(request.user)
    serializer_context = {"policy": policy}
    errors: dict[str, list[str]] = {}
    status, retry_after = 200, None
    chosen = PrivacySerializer(preferences, context=serializer_context).data
    if request.method == "POST":
        data = _form_data(request.POST)
        serializer = PrivacySerializer(preferences, data=data, partial=True, context=serializer_context)
        if serializer.is_valid():
            try:
                services.count_input_change(request.user)
            except RateLimited as refused:
                errors, status, retry_after = {"non_field_errors": [refused.detail]}, 429, refused.retry_after
            else:
                services.update_preferences(request.user, **serializer.validated_data)
                messages.success(request, "Your presence settings are saved. Your presence was updated at once.")
                return redirect("privacy-settings")
        else:
            errors, status = flatten_field_errors(serializer.errors), 400
        chosen = {**chosen, **data}  # show what was sent, with what is wrong about it

    allows = chosen["organization_allows"]
    context |= {
        "options": [
            Option(name, label, help_text, bool(chosen[name]), allows[name], errors.get(name, []))
            for name, label, help_text in _OPTIONS
        ],
        "forbidden_reason": _FORBIDDEN_REASON,
        "priority": chosen["priority"] or "",
        "priority_choices": list(_PRIORITY_LABELS.items()),
        "default_priority_label": _PRIORITY_LABELS[policy.default_priority].split(":")[0],
        "priority_errors": errors.get("priority", []),
        "non_field_errors": errors.get("non_field_errors", []),
        "server_dispatch": settings.PRESENCE_SERVER_DISPATCH,
    }
    response = render(request, "pages/privacy.html", context, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


@login_required
@require_http_methods(["GET"])
def my_presence(request: HttpRequest) -> HttpResponse:
    if not settings.PRESENCE_USE_AGGREGATOR:
        return render(request, "pages/my_presence.html", {"mode": "classic"})
    now = timezone.now()
    state = selectors.current_presence(request.user, now)
    return render(
        request,
        "pages/my_presence.html",
        {
            "mode": "aggregated",
            "state": state,
            "status_label": _STATUS_LABELS.get(state.status, state.status),
            "reason_text": _REASON_TEXT.get(state.reason, state.reason),
            "devices": overview.devices_overview(request.user, now),
            "organization": selectors.organization_of(request.user),
        },
    )


@login_required
@ensure_csrf_cookie  # the page's script changes the status with the session: it sends the cookie back
@require_http_methods(["GET"])
def people(request: HttpRequest) -> HttpResponse:
    """The people page: my status and its menu, and my colleagues live. A shell: the reference
    client (`static/presence/client.js`, driven by `static/presence/people.js`) fills it in."""
    if not settings.PRESENCE_USE_AGGREGATOR:
        return render(request, "pages/people.html", {"mode": "classic"})
    state = selectors.current_presence(request.user, timezone.now())
    organization = selectors.organization_of(request.user)
    allow_appear_offline = selectors.policy_of(organization).allow_appear_offline
    return render(
        request,
        "pages/people.html",
        {
            "mode": "aggregated",
            "state": state,
            "status_label": _STATUS_LABELS.get(state.status, state.status),
            "organization": organization,
            "status_choices": [(s, label) for s, label in _STATUS_CHOICES if s != "offline" or allow_appear_offline],
            "clear_after_choices": _CLEAR_AFTER,
            "message_max_length": MESSAGE_MAX_LENGTH,
            # What the page script's `import './client.js'` resolves to (see the template's import map).
            "client_url_plain": f"{settings.STATIC_URL}presence/client.js",
        },
    )
