"""The statements a `CaptureQueriesContext` saw, as sent: one per `execute` or `executemany`
(which Django records as "<n> times: <sql>")."""

from __future__ import annotations

import re

from django.test.utils import CaptureQueriesContext

WRITES = ("INSERT", "UPDATE", "DELETE")
_MANY = re.compile(r"^\d+ times: ")


def statements(queries: CaptureQueriesContext) -> list[str]:
    return [_MANY.sub("", q["sql"].lstrip()) for q in queries.captured_queries]


def writes_in(queries: CaptureQueriesContext) -> list[str]:
    return [sql for sql in statements(queries) if sql.upper().startswith(WRITES)]


def locks_and_writes(queries: CaptureQueriesContext) -> list[str]:
    return [sql for sql in statements(queries) if "FOR UPDATE" in sql.upper() or sql.upper().startswith(WRITES)]
