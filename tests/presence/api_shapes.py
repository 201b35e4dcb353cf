"""What the API's presence answers hold, shared by the API tests."""

# `GET /api/v1/me/presence`: the decision, with the rule that decided it.
MY_PRESENCE_KEYS = frozenset(
    {"status", "activity", "status_msg", "last_active", "last_active_ago", "currently_active", "reason", "status_until"}
)
