"""Fixtures of the integrations: a fake Microsoft (Entra sign-in and Graph), a broker that holds
deliveries until the test runs them, and users who share their presence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from integrations import dispatch, http, microsoft
from integrations.models import ExternalAccount, MicrosoftTenant
from orgs.models import User
from presence import services
from tests.factories import ExternalAccountFactory, MicrosoftTenantFactory
from tests.integrations.fake_microsoft import FakeMicrosoft


@pytest.fixture(scope="session")
def fake_microsoft_server(tmp_path_factory) -> FakeMicrosoft:
    fake = FakeMicrosoft(tmp_path_factory.mktemp("fake-microsoft"))
    yield fake
    fake.close()


@pytest.fixture
def fake_microsoft(fake_microsoft_server, settings) -> FakeMicrosoft:
    """The fake, emptied, with the server pointed at it and trusting its certificate."""
    fake_microsoft_server.reset()
    settings.MICROSOFT_LOGIN_URL = fake_microsoft_server.base_url
    settings.MICROSOFT_GRAPH_URL = f"{fake_microsoft_server.base_url}/v1.0"
    settings.INTEGRATIONS_CA_BUNDLE = str(fake_microsoft_server.cert_path)
    http.reset_client()
    microsoft.forget_apps()
    yield fake_microsoft_server
    http.reset_client()
    microsoft.forget_apps()


@pytest.fixture
def server_dispatch(settings) -> None:
    settings.PRESENCE_USE_AGGREGATOR = True
    settings.PRESENCE_SERVER_DISPATCH = True
    # Tasks run in-process, where a countdown is waited for (sparks_site.periodic): without the
    # coalescing pause a change is delivered before the call that made it returns. Tests of the
    # pause and of retries drive the deliveries themselves.
    settings.INTEGRATIONS_DISPATCH_COALESCE_SECONDS = 0


@pytest.fixture
def tenant(organization, fake_microsoft) -> MicrosoftTenant:
    tenant = MicrosoftTenantFactory(organization=organization)
    fake_microsoft.register_app(tenant.tenant_id, tenant.client_id, "sparks-test-client-secret")
    return tenant


@pytest.fixture
def sharing() -> Callable[..., ExternalAccount]:
    """The user shares presence externally and is known in Entra (and optionally on Matrix)."""

    def make(user: User, matrix_user_id: str = "") -> ExternalAccount:
        account = ExternalAccountFactory(user=user, matrix_user_id=matrix_user_id)
        services.update_preferences(user, share_externally=True)
        return account

    return make


@dataclass
class HeldDelivery:
    user_id: int
    target: str
    refresh: bool
    countdown: float


class HeldBroker:
    """Deliveries queued as a broker would hold them; `run_next` plays the worker."""

    def __init__(self) -> None:
        self.queue: list[HeldDelivery] = []
        self.history: list[HeldDelivery] = []

    def hold(self, user_id: int, target: str, refresh: bool, countdown: float) -> None:
        held = HeldDelivery(user_id, target, refresh, countdown)
        self.queue.append(held)
        self.history.append(held)

    def run_next(self) -> dispatch.Delivery:
        held = self.queue.pop(0)
        return dispatch.deliver(held.user_id, held.target, held.refresh)


@pytest.fixture
def broker(monkeypatch) -> HeldBroker:
    held = HeldBroker()
    monkeypatch.setattr(dispatch, "_enqueue_delivery", held.hold)
    return held


@pytest.fixture(scope="session")
def synapse(tmp_path_factory):
    """A real Synapse (1.163) for the session, on a free loopback port, SPARKS registered as an
    appservice. Its virtualenv is kept across runs; its data directory is new each run."""
    from tests.integrations.synapse import Synapse

    server = Synapse(tmp_path_factory.mktemp("synapse"))
    server.start()
    yield server
    server.stop()
