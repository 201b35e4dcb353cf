"""Shared fixtures: organizations, members, authenticated API clients, a clean Redis."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator

import pytest
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from orgs.models import Membership, Organization, User
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory


@pytest.fixture(scope="session", autouse=True)
def _runs_on_the_real_stack(django_db_setup, django_db_blocker) -> None:
    """The suite is meant for PostgreSQL and Redis; SQLite would hide locking and SQL differences."""
    from django.conf import settings
    from django.db import connection

    if os.environ.get("SPARKS_TESTS_ALLOW_EMBEDDED"):
        return
    with django_db_blocker.unblock():
        vendor = connection.vendor
    if vendor != "postgresql" or not settings.REDIS_URL:
        pytest.exit(
            "The test suite runs against PostgreSQL and Redis: use `make test` (or set DATABASE_URL and REDIS_URL).",
            returncode=2,
        )


@pytest.fixture(scope="session", autouse=True)
def _fresh_redis(_runs_on_the_real_stack) -> None:
    """The test Redis db starts empty, as the test database does: the hot state and rate limits of
    an earlier run, whose users had the same ids, must not reach this one."""
    import redis
    from django.conf import settings

    if settings.REDIS_URL:
        redis.Redis.from_url(settings.REDIS_URL).flushdb()


@pytest.fixture(autouse=True)
def _clean_cache() -> None:
    # On Redis, the cache's clear empties the test db, hot state included: each test starts with
    # none. On a cluster run the hot state lives on the suite's own cluster, emptied alike.
    from django.conf import settings

    cache.clear()
    if settings.REDIS_CLUSTER_NODES:
        _test_cluster(tuple(settings.REDIS_CLUSTER_NODES)).flushall(target_nodes="primaries")


@functools.cache
def _test_cluster(nodes: tuple[str, ...]):
    from presence.hot.connection import Target, sync_client

    return sync_client(Target(cluster_nodes=nodes))


@pytest.fixture(autouse=True)
def _no_deferred_tasks() -> None:
    """A task one test sent in-process with a countdown (a retried delivery) never runs in another."""
    from sparks_site.periodic import deferred

    deferred.clear()
    yield
    deferred.clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # Real hashing costs ~0.3 s a user; what tests check of passwords does not depend on it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def keep_the_test_transaction() -> Iterator[None]:
    """Django's WSGI handler closes old connections around each request, which would end the test's
    transaction; its test client turns that off the same way. For requests made through the WSGI
    application itself (`tests.wsgi_calls`)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def organization() -> Organization:
    return OrganizationFactory(slug="demo", name="Demo")


@pytest.fixture
def other_organization() -> Organization:
    return OrganizationFactory(slug="acme", name="Acme")


@pytest.fixture
def make_member(organization: Organization) -> Callable[..., User]:
    def make(username: str, org: Organization | None = None, role: str = Membership.Role.MEMBER) -> User:
        user = UserFactory(username=username)
        MembershipFactory(user=user, organization=org or organization, role=role)
        return user

    return make


@pytest.fixture
def alice(make_member) -> User:
    return make_member("alice")


@pytest.fixture
def bob(make_member) -> User:
    return make_member("bob")


@pytest.fixture
def carol(make_member, other_organization) -> User:
    return make_member("carol", other_organization)


@pytest.fixture
def api_for() -> Callable[[User | None], APIClient]:
    """An API client signed in with the user's DRF token (anonymous for None)."""

    def make(user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make


@pytest.fixture
def alice_api(api_for, alice) -> APIClient:
    return api_for(alice)
