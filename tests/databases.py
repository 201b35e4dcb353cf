"""The test database and environment for the real processes (servers, Celery) some tests start."""

from __future__ import annotations

import os

from django.conf import settings


def database_url(name: str | None = None) -> str:
    """`postgres://…` of the suite's test database (the one pytest created, not the one
    DATABASE_URL names), or of another database `name` on the same server."""
    database = settings.DATABASES["default"]
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database.get("PASSWORD") else "")
    server = f"{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}"
    return f"postgres://{credentials}@{server}/{name or database['NAME']}"


def process_environment(redis_url: str, **overrides: str) -> dict[str, str]:
    """This process's environment for a server or Celery process of the tests: the test database,
    `redis_url`, the same SECRET_KEY (device ids are a keyed hash of it), DEBUG off, then `overrides`."""
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
        "SECRET_KEY": settings.SECRET_KEY,
        "DEBUG": "0",
        **overrides,
    }
