"""Matrix and Teams from `make run`'s server, on the embedded default: no Redis, no worker, no beat.

The server is started as `make run` starts it (`manage.py runserver`, tasks in-process), on the
test database so that the test can set the organization up and read what was stored. Every change
goes through the server's API; what reaches Graph (the fake) and Synapse is what the server's
in-process beat and countdowns did.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from integrations.models import DispatchState, GraphPublication
from orgs.models import User
from presence import services
from tests.factories import ExternalAccountFactory, MatrixHomeserverFactory
from tests.integrations.fake_microsoft import FakeMicrosoft, Fault
from tests.real_processes import make_run_environment, runserver

pytestmark = pytest.mark.django_db(transaction=True)

# Beat's intervals, short for the test (a deployment's defaults are 5 s, 2 s, 10 s and 60 s).
INTERVALS = {
    "PRESENCE_SWEEP_INTERVAL_SECONDS": "1",
    "MATRIX_PRESENCE_REFRESH_SECONDS": "1",
    "MICROSOFT_IMPORT_INTERVAL_SECONDS": "1",
}


@dataclass
class EmbeddedServer:
    base_url: str
    log_path: Path

    def api(self, user: User) -> httpx.Client:
        token, _ = Token.objects.get_or_create(user=user)
        return httpx.Client(base_url=f"{self.base_url}/api/v1", headers={"Authorization": f"Token {token.key}"})

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def embedded_server(fake_microsoft_server: FakeMicrosoft, tmp_path, transactional_db) -> Iterator[EmbeddedServer]:
    """A server per test, stopped before the test's database is emptied: its beat writes every
    second, and would otherwise hold rows the emptying waits on."""
    env = make_run_environment(
        PRESENCE_SERVER_DISPATCH="true",
        MICROSOFT_LOGIN_URL=fake_microsoft_server.base_url,
        MICROSOFT_GRAPH_URL=f"{fake_microsoft_server.base_url}/v1.0",
        INTEGRATIONS_CA_BUNDLE=str(fake_microsoft_server.cert_path),
        **INTERVALS,
    )
    with runserver(env, tmp_path / "runserver.log") as server:
        yield EmbeddedServer(server.base_url, server.log_path)


@pytest.fixture
def shares_with_teams(alice, tenant) -> Callable[[], str]:
    """Alice shares her presence with Teams; her Entra object id."""
    account = ExternalAccountFactory(user=alice)
    services.update_preferences(alice, share_externally=True)
    return account.microsoft_object_id


def _wait_until(condition: Callable[[], object], timeout: float = 15.0, about: Callable[[], str] = str) -> float:
    """Poll `condition` until true; the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s\n{about()}")
        time.sleep(0.05)
    return time.monotonic() - started


def _preferred(fake: FakeMicrosoft, object_id: str) -> tuple[str, str] | None:
    preferred = fake.preferred.get(object_id)
    return (preferred["availability"], preferred["activity"]) if preferred else None


def test_a_delivery_graph_throttles_is_sent_again_with_the_newest_state_after_retry_after(
    embedded_server, alice, tenant, fake_microsoft, shares_with_teams
):
    object_id = shares_with_teams
    fake_microsoft.fail_next(Fault(429, {"Retry-After": "2"}, {"error": {"code": "TooManyRequests"}}))
    api = embedded_server.api(alice)

    assert api.post("/devices", json={"installation_id": "laptop"}).status_code == 201
    _wait_until(lambda: fake_microsoft.graph_calls("/setPresence"), about=embedded_server.log)
    refused_at = time.monotonic()
    # The first attempt was refused; the user changes their status meanwhile.
    assert api.put("/me/status", json={"status": "busy", "message": "Release day"}).status_code == 200

    _wait_until(lambda: _preferred(fake_microsoft, object_id) == ("Busy", "Busy"), about=embedded_server.log)

    # Not before Graph's wait was over; the exact moment (the countdown's due time, the beat waking
    # up for it) is tested without a server in tests/sparks_site/test_periodic.py, so this leaves
    # room for a busy machine.
    assert 2 - 0.1 <= time.monotonic() - refused_at <= 2 + 5
    session = fake_microsoft.sessions[(object_id, tenant.client_id)]
    assert (session["availability"], session["activity"]) == ("Available", "Available")
    # Recorded once Graph answered.
    _wait_until(lambda: DispatchState.objects.get(user=alice, target="microsoft").sent["status"] == "busy")


def test_the_microsoft_import_runs_on_its_interval(embedded_server, alice, tenant, fake_microsoft):
    account = ExternalAccountFactory(user=alice)
    services.update_preferences(alice, include_microsoft_presence=True)
    fake_microsoft.presences[account.microsoft_object_id] = ("Busy", "InAMeeting")
    api = embedded_server.api(alice)
    assert api.post("/devices", json={"installation_id": "laptop"}).status_code == 201

    _wait_until(lambda: api.get("/me/presence").json()["activity"] == "in_meeting", about=embedded_server.log)
    reads = len(fake_microsoft.graph_calls("/getPresencesByUserId"))
    _wait_until(lambda: len(fake_microsoft.graph_calls("/getPresencesByUserId")) >= reads + 2, timeout=5)

    fake_microsoft.presences[account.microsoft_object_id] = ("Available", "Available")  # the meeting ended
    _wait_until(lambda: api.get("/me/presence").json()["status"] == "available", about=embedded_server.log)


@pytest.mark.synapse
def test_the_matrix_presence_is_refreshed_before_synapse_lets_it_decay(
    embedded_server, make_member, organization, synapse
):
    MatrixHomeserverFactory(
        organization=organization, base_url=synapse.base_url, server_name=synapse.server_name, as_token=synapse.as_token
    )
    localpart = f"sparks{uuid.uuid4().hex[:10]}"
    member = make_member(localpart)
    on_matrix = synapse.register(localpart)
    colleague = synapse.register(f"colleague{uuid.uuid4().hex[:10]}")
    synapse.share_a_room(colleague, on_matrix)
    ExternalAccountFactory(user=member, microsoft_object_id="")
    services.update_preferences(member, share_externally=True)

    assert embedded_server.api(member).post("/devices", json={"installation_id": "laptop"}).status_code == 201
    _wait_until(lambda: synapse.presence_of(colleague, on_matrix.user_id)["presence"] == "online")
    _wait_until(lambda: DispatchState.objects.filter(user=member, target="matrix", sent_at__isnull=False).exists())
    first = DispatchState.objects.get(user=member, target="matrix").sent_at

    # Synapse turns a presence no client syncs offline after 30 s; beat sends it again before.
    def sent_again() -> set:
        refreshes.add(DispatchState.objects.get(user=member, target="matrix").sent_at)
        return {sent_at for sent_at in refreshes if sent_at > first}

    refreshes = set()
    _wait_until(lambda: len(sent_again()) >= 2, timeout=10)
    presence = synapse.presence_of(colleague, on_matrix.user_id)
    assert presence["presence"] == "online"
    assert presence["last_active_ago"] < 5000


def test_the_teams_session_is_renewed_before_it_lapses(
    embedded_server, alice, tenant, fake_microsoft, shares_with_teams
):
    api = embedded_server.api(alice)
    assert api.post("/devices", json={"installation_id": "laptop"}).status_code == 201
    _wait_until(lambda: GraphPublication.objects.filter(user=alice, kind="session").exists(), about=embedded_server.log)
    sessions_set = len(fake_microsoft.graph_calls("/setPresence"))

    # The session's five minutes, played forward: it now lapses within the minute of renewal.
    GraphPublication.objects.filter(user=alice, kind="session").update(
        expires_at=timezone.now() + timedelta(seconds=50)
    )

    _wait_until(lambda: len(fake_microsoft.graph_calls("/setPresence")) > sessions_set, about=embedded_server.log)
    # Recorded once Graph answered.
    _wait_until(
        lambda: (
            GraphPublication.objects.get(user=alice, kind="session", ended_at=None).expires_at
            > timezone.now() + timedelta(minutes=4)
        )
    )


def test_with_import_and_sharing_on_a_do_not_disturb_set_and_cleared_leaves_the_user_available(
    embedded_server, alice, tenant, fake_microsoft, shares_with_teams
):
    object_id = shares_with_teams
    services.update_preferences(alice, include_microsoft_presence=True)
    api = embedded_server.api(alice)
    assert api.post("/devices", json={"installation_id": "laptop"}).status_code == 201

    assert api.put("/me/status", json={"status": "dnd"}).status_code == 200
    _wait_until(lambda: _preferred(fake_microsoft, object_id) == ("DoNotDisturb", "DoNotDisturb"))
    reads = len(fake_microsoft.graph_calls("/getPresencesByUserId"))
    _wait_until(lambda: len(fake_microsoft.graph_calls("/getPresencesByUserId")) >= reads + 2)  # Teams shows our DND
    assert api.delete("/me/status").status_code in (200, 204)

    _wait_until(lambda: api.get("/me/presence").json()["status"] == "available", about=embedded_server.log)
    _wait_until(lambda: _preferred(fake_microsoft, object_id) is None)
    reads = len(fake_microsoft.graph_calls("/getPresencesByUserId"))
    _wait_until(lambda: len(fake_microsoft.graph_calls("/getPresencesByUserId")) >= reads + 3)
    assert api.get("/me/presence").json()["status"] == "available"
    assert _preferred(fake_microsoft, object_id) is None
