"""The test database as a URL, for the real processes (servers, Celery) some tests start."""

from __future__ import annotations

from django.conf import settings


def database_url(name: str | None = None) -> str:
    """`postgres://…` of the suite's test database (the one pytest created, not the one
    DATABASE_URL names), or of another database `name` on the same server."""
    database = settings.DATABASES["default"]
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database.get("PASSWORD") else "")
    server = f"{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}"
    return f"postgres://{credentials}@{server}/{name or database['NAME']}"
