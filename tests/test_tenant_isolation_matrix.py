"""The tenant isolation matrix: a member of one organization, with another organization's ids.

Every endpoint of `/api/v1/` (each method the OpenAPI schema lists, and the routes it does not:
the server-sent events stream) and the presence websocket are tried by alice
(organization "demo") with carol's ids (organization "acme"): her user id and her device id, in
the path, in the query and in bodies. Each attempt must be refused as the API documents it (404
for an id in the path, 400 for a body field the endpoint does not know, 4403 on the websocket) or,
for `me/…` endpoints that only ever act on the caller, answer about alice alone; and no row of
carol's — devices, presence state, manual status, preferences, calendar, history — nor her
presence in the hot store may change.

The matrix fails when the schema or `presence/urls.py` gains an endpoint it does not cover.
`tests/presence/test_isolation.py` has the device cases in detail; the Django admin's scoping of
every registered model is `tests/orgs/test_admin_scoping.py`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.urls import URLPattern
from django.utils import timezone
from rest_framework.authtoken.models import Token

from orgs.models import Membership, User
from presence import hot, services
from presence import urls as presence_urls
from presence.models import (
    CalendarBlock,
    Device,
    DeviceHistory,
    ManualStatus,
    MicrosoftPresence,
    PresenceHistory,
    PresencePreferences,
    PresenceState,
)
from presence.vocabulary import SignalType, Status
from sparks_site.asgi import application
from tests.presence.live_helpers import settle, token_of

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
CAROL_MESSAGE = "carol-private-focus"
CAROL_INSTALLATION = "carol-laptop"

# Routes of presence/urls.py that the OpenAPI schema does not describe, and where the matrix
# covers them. The catch-all (JSON 404) has no name.
ROUTES_OUTSIDE_THE_SCHEMA = {"peer-stream": "test_the_stream_refuses_another_organizations_user_ids"}


@dataclass(frozen=True)
class Attempt:
    """One request of alice's carrying carol's ids; `path` is the schema's, `{…}` filled with carol's."""

    method: str
    path: str
    expected: int
    query: dict = field(default_factory=dict)
    body: dict | None = None
    owner_expected: int | None = None  # the same request by carol: proves the path reaches something
    note: str = ""

    @property
    def id(self) -> str:
        return f"{self.method.upper()} {self.path}{' ' + self.note if self.note else ''}"


CAROL_USER = "{user_id}"
CAROL_DEVICE = "{device_id}"
FOREIGN = {"user_id": CAROL_USER, "device_id": CAROL_DEVICE}
HEARTBEAT = {"signals": [{"type": "heartbeat", "seq": 1_000}]}
BATCH = {
    "signals": [{"type": "network", "value": "offline", "seq": 1_001}, {"type": "call", "value": "start", "seq": 1_002}]
}

MATRIX = [
    Attempt("get", "/api/v1/config", 200, query=FOREIGN, note="ids in the query"),
    Attempt("get", "/api/v1/devices", 200, query=FOREIGN, note="ids in the query"),
    Attempt("post", "/api/v1/devices", 400, body={"installation_id": "x", **FOREIGN}, note="ids in the body"),
    Attempt("post", "/api/v1/devices", 201, body={"installation_id": CAROL_INSTALLATION}, note="her installation"),
    Attempt("delete", "/api/v1/devices/{device_id}", 404, owner_expected=204),
    Attempt("delete", "/api/v1/devices/{device_id}", 404, query=FOREIGN, note="ids in the query too"),
    Attempt("post", "/api/v1/devices/{device_id}/signals", 404, body=HEARTBEAT, owner_expected=202, note="heartbeat"),
    Attempt("post", "/api/v1/devices/{device_id}/signals", 404, body=BATCH, owner_expected=202, note="batch"),
    Attempt("post", "/api/v1/devices/{device_id}/signals", 400, body={**BATCH, **FOREIGN}, note="ids in the body"),
    Attempt("get", "/api/v1/me/presence", 200, query=FOREIGN, note="ids in the query"),
    Attempt("get", "/api/v1/me/presence/explain", 200, query=FOREIGN, note="ids in the query"),
    # Alice has no manual status; carol's must not answer in its place.
    Attempt("get", "/api/v1/me/status", 404, query=FOREIGN, note="ids in the query"),
    Attempt("put", "/api/v1/me/status", 400, body={"status": "away", **FOREIGN}, note="ids in the body"),
    Attempt("delete", "/api/v1/me/status", 200, query=FOREIGN, note="ids in the query"),
    Attempt("get", "/api/v1/me/calendar", 200, query=FOREIGN, note="ids in the query"),
    Attempt("put", "/api/v1/me/calendar", 400, body={"blocks": [], **FOREIGN}, note="ids in the body"),
    Attempt("get", "/api/v1/me/privacy", 200, query=FOREIGN, note="ids in the query"),
    Attempt("patch", "/api/v1/me/privacy", 400, body={"share_externally": False, **FOREIGN}, note="ids in the body"),
    Attempt("get", "/api/v1/peers", 200, query=FOREIGN, note="ids in the query"),
    Attempt("get", "/api/v1/peers/{user_id}", 404, owner_expected=200),
    Attempt("get", "/api/v1/peers/{user_id}", 404, query=FOREIGN, note="ids in the query too"),
]


# --- Carol's organization, filled ----------------------------------------------------------------


@dataclass
class Carol:
    user: User
    device_id: str

    @property
    def ids(self) -> dict[str, str]:
        return {"user_id": str(self.user.public_id), "device_id": self.device_id}

    @property
    def secrets(self) -> list[str]:
        """What of carol's no answer to alice may contain."""
        return [str(self.user.public_id), self.device_id, CAROL_MESSAGE, self.user.email]

    def fill(self, text: str) -> str:
        return text.format(**self.ids)


def _fill_carol(carol: User) -> Carol:
    """Carol with a row in every table of hers an endpoint could touch, and her organization's
    policy unlike alice's, so that an answer built from either tells which."""
    policy = carol.membership.organization.policy
    policy.idle_timeout_seconds = 1_234
    policy.allow_external_dispatch = True
    policy.save()
    device, _ = services.register_device(carol, CAROL_INSTALLATION, CAROL_INSTALLATION)
    services.ingest_signals(carol, device.device_id, [services.Signal(SignalType.ACTIVITY, "active", 1)])
    services.set_manual_status(carol, Status.DND, CAROL_MESSAGE, timezone.now() + timedelta(hours=2))
    services.replace_calendar(carol, [(timezone.now() + timedelta(hours=3), timezone.now() + timedelta(hours=4))])
    services.update_preferences(carol, share_externally=True, use_calendar_busy=False)
    MicrosoftPresence.objects.create(user=carol, availability="Busy", activity="InACall", observed_at=timezone.now())
    return Carol(carol, device.device_id)


def _rows_of(user: User) -> dict:
    """Every stored row about the user that the API or the websocket could change."""

    def rows(model) -> list[dict]:
        return list(model.objects.filter(user=user).order_by("pk").values())

    return {
        "devices": rows(Device),
        "presence_state": rows(PresenceState),
        "manual_status": rows(ManualStatus),
        "preferences": rows(PresencePreferences),
        "calendar": rows(CalendarBlock),
        "microsoft_presence": rows(MicrosoftPresence),
        "presence_history": rows(PresenceHistory),
        "device_history": rows(DeviceHistory),
        "hot_state": hot.store().read(user.pk),
        "user": list(User.objects.filter(pk=user.pk).values()),
        "membership": list(Membership.objects.filter(user=user).values()),
        "tokens": rows(Token),
    }


@pytest.fixture
def carol_filled(carol) -> Carol:
    return _fill_carol(carol)


# --- The REST matrix -----------------------------------------------------------------------------


def _call(client, attempt: Attempt, carol: Carol):
    path = carol.fill(attempt.path)
    query = {key: carol.fill(value) for key, value in attempt.query.items()}
    if query:
        path = f"{path}?{'&'.join(f'{key}={value}' for key, value in query.items())}"
    body = None
    if attempt.body is not None:
        body = {key: carol.fill(value) if isinstance(value, str) else value for key, value in attempt.body.items()}
    return getattr(client, attempt.method)(path, body, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize("attempt", MATRIX, ids=lambda attempt: attempt.id)
def test_another_organizations_ids_reach_nothing_of_theirs(api_for, alice, bob, carol_filled, attempt):
    before = _rows_of(carol_filled.user)

    response = _call(api_for(alice), attempt, carol_filled)

    assert response.status_code == attempt.expected, response.content
    text = response.content.decode()
    for secret in carol_filled.secrets:
        assert secret not in text
    if attempt.method == "get" and attempt.path == "/api/v1/config":
        assert response.json()["idle_timeout_seconds"] != 1_234  # alice's policy, not carol's
    if attempt.method == "get" and attempt.path == "/api/v1/me/privacy":
        assert response.json()["share_externally"] is False  # alice's default, not carol's choice
    assert _rows_of(carol_filled.user) == before


@pytest.mark.django_db
@pytest.mark.parametrize("attempt", [a for a in MATRIX if a.owner_expected is not None], ids=lambda attempt: attempt.id)
def test_the_same_requests_reach_carols_own_objects_for_carol(api_for, carol_filled, attempt):
    # The control of the matrix: its 404s come from the ownership check, not from a wrong path.
    response = _call(api_for(carol_filled.user), attempt, carol_filled)

    assert response.status_code == attempt.owner_expected, response.content


def _schema_operations(client) -> set[tuple[str, str]]:
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    return {(method, path) for path, item in paths.items() for method in item if method in HTTP_METHODS}


@pytest.mark.django_db
def test_the_matrix_covers_every_operation_of_the_schema(client):
    operations = _schema_operations(client)
    covered = {(attempt.method, attempt.path) for attempt in MATRIX}

    assert operations - covered == set(), "operations of the API the isolation matrix does not try"
    assert covered - operations == set(), "attempts at operations the schema does not list"


def test_every_route_outside_the_schema_is_covered_too():
    named = {pattern.name for pattern in presence_urls.urlpatterns if isinstance(pattern, URLPattern) and pattern.name}
    in_schema = {
        "config",
        "devices",
        "device",
        "device-signals",
        "my-presence",
        "my-presence-explain",
        "my-status",
        "my-calendar",
        "my-privacy",
        "peers",
        "peer",
    }

    assert named - in_schema == set(ROUTES_OUTSIDE_THE_SCHEMA), "a route of /api/v1/ the matrix does not try"
    for test_name in ROUTES_OUTSIDE_THE_SCHEMA.values():
        assert callable(globals()[test_name])


# --- Server-sent events and the websocket --------------------------------------------------------


def _stream(user: User, query: dict):
    from django.test import AsyncClient

    headers = {"Authorization": f"Token {token_of(user)}"}

    async def call():
        return await AsyncClient().get("/api/v1/peers/stream", query, headers=headers)

    return async_to_sync(call)()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mixed", [False, True], ids=["carol-only", "with-a-colleague"])
def test_the_stream_refuses_another_organizations_user_ids(alice, bob, carol_filled, mixed):
    before = _rows_of(carol_filled.user)
    user_ids = [str(bob.public_id)] if mixed else []
    user_ids.append(str(carol_filled.user.public_id))

    response = _stream(alice, {"user_ids": ",".join(user_ids)})

    assert response["Content-Type"] == "application/json"
    assert (response.status_code, response.json()) == (404, {"error": "not_found", "detail": "No such colleague."})
    assert _rows_of(carol_filled.user) == before


async def _socket(user: User) -> WebsocketCommunicator:
    token = await database_sync_to_async(token_of)(user)
    communicator = WebsocketCommunicator(application, f"/ws/presence/?token={token}")
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    # The snapshot of alice's organization: carol is in no page of it.
    while True:
        page = await communicator.receive_json_from(10)
        assert page["type"] == "snapshot", page
        if page["last"]:
            return communicator


def _peers_shown(page: dict) -> set[str]:
    return {peer["user_id"] for peer in page["peers"]}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mixed", [False, True], ids=["carol-only", "with-a-colleague"])
def test_subscribing_to_another_organizations_user_closes_the_socket_4403(alice, bob, carol_filled, mixed):
    settle(alice, bob)
    before = _rows_of(carol_filled.user)
    user_ids = [str(bob.public_id)] if mixed else []
    user_ids.append(str(carol_filled.user.public_id))

    async def scenario():
        ws = await _socket(alice)
        try:
            await ws.send_json_to({"type": "subscribe", "user_ids": user_ids})
            output = await ws.receive_output(timeout=5)
            assert (output["type"], output.get("code")) == ("websocket.close", 4403), output
        finally:
            await ws.disconnect(timeout=0.1)

    async_to_sync(scenario)()
    assert _rows_of(carol_filled.user) == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("signals", [HEARTBEAT, BATCH], ids=["heartbeat", "batch"])
def test_signals_over_the_socket_for_another_organizations_device_are_not_found(alice, bob, carol_filled, signals):
    settle(alice, bob)
    before = _rows_of(carol_filled.user)

    async def scenario():
        ws = await _socket(alice)
        try:
            await ws.send_json_to({"type": "signals", "device_id": carol_filled.device_id, "id": 9, **signals})
            reply = await ws.receive_json_from(5)
            assert (reply["type"], reply["error"], reply["id"]) == ("error", "not_found", 9), reply
            # The socket stays, and still shows alice's organization only.
            await ws.send_json_to({"type": "subscribe", "user_ids": None})
            page = await ws.receive_json_from(5)
            assert str(carol_filled.user.public_id) not in _peers_shown(page)
        finally:
            await ws.disconnect(timeout=0.1)

    async_to_sync(scenario)()
    assert _rows_of(carol_filled.user) == before
