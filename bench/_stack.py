"""What the benchmarks share: a throw-away PostgreSQL database and Redis db, and Django on them.

Each benchmark owns its database (created at start, dropped at the end) and its Redis db number
(flushed at start and at the end), so it never touches a developer's or the test suite's data.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_SERVER = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")


def database_url(name: str) -> str:
    return f"{PG_SERVER.rstrip('/')}/{name}"


def redis_url(db: int) -> str:
    return f"{REDIS_SERVER.rstrip('/')}/{db}"


def _admin_connection():
    import psycopg

    parts = urlsplit(PG_SERVER)
    return psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True)


def create_database(name: str) -> None:
    with _admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with _admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def flush_redis(db: int) -> None:
    import redis

    redis.Redis.from_url(redis_url(db)).flushdb()


UNREACHABLE_RATE_LIMITS = ("PRESENCE_RATE_LIMIT_DEVICE", "PRESENCE_RATE_LIMIT_USER", "PRESENCE_RATE_LIMIT_STATUS")


def server_environment(db_name: str, redis_db: int) -> dict[str, str]:
    """The environment of a production-like process on the benchmark's database and Redis db."""
    return {
        "DJANGO_SETTINGS_MODULE": "sparks_site.settings",
        "DATABASE_URL": database_url(db_name),
        "REDIS_URL": redis_url(redis_db),
        "SECRET_KEY": "benchmark-only-secret-key-not-for-production",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "BEAT_IN_PROCESS": "0",
        # Tasks go through Redis to a worker, as deployed, also when run from the test suite's
        # environment (which runs tasks in-process).
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "CHANNEL_LAYER_PREFIX": os.environ.get("BENCH_CHANNEL_PREFIX", "sparksbench"),
        "LOG_LEVEL": "WARNING",
        # A benchmark's device sends thousands of signals a second, far past any real client: the
        # limits are checked on every request (their cost is in the figures) but never reached.
        **{key: "1000000000/s" for key in UNREACHABLE_RATE_LIMITS},
    }


def setup_django(db_name: str, redis_db: int) -> None:
    """Point this process at the benchmark's database and Redis db, set Django up and migrate."""
    os.environ.update(server_environment(db_name, redis_db))
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def run_on_own_data(db_name: str, redis_db: int, run: Callable[[], int], keep: bool = False) -> int:
    """`run()` with Django set up on a fresh database and an emptied Redis db of the benchmark's
    own, both dropped / emptied afterwards unless `keep`."""
    flush_redis(redis_db)
    create_database(db_name)
    try:
        setup_django(db_name, redis_db)
        return run()
    finally:
        if not keep:
            close_django()
            drop_database(db_name)
            flush_redis(redis_db)


def waiting_to_persist(client) -> int:
    """Users marked for the write-behind in the hot store's Redis db that `client` reads: the
    members of every shard's `persist`, counted in one pipeline (Django set up on that db)."""
    from presence import hot

    pipe = client.pipeline(transaction=False)
    for shard in hot.store().shards:
        pipe.zcard(shard.persist)
    return sum(pipe.execute())


def close_django() -> None:
    from django.db import connections

    connections.close_all()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def wait_http(url: str, timeout: float = 30) -> None:
    """Wait until a server answers `url` at all (any HTTP status will do)."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


ASGI_SERVERS = ("prod", "daphne")


def asgi_server_command(kind: str, port: int) -> list[str]:
    """The command serving `sparks_site.asgi:application` (websockets, SSE) on 127.0.0.1:port:
    `prod` is production's live process, from `deploy/processes.py` itself."""
    bin_dir = ROOT / ".venv" / "bin"
    if kind == "prod":
        sys.path.insert(0, str(ROOT))
        from deploy import processes

        return processes.live_command(bin_dir, "127.0.0.1", port)
    return [str(bin_dir / "daphne"), "-b", "127.0.0.1", "-p", str(port), "sparks_site.asgi:application"]


def stop_processes(processes: list) -> None:
    """Stop servers started with subprocess.Popen: TERM each, wait, KILL what is left."""
    import signal
    import subprocess

    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    processes.clear()


def start_redis_server(workdir: Path) -> tuple[subprocess.Popen, int]:
    """A redis-server of a benchmark's own: a free loopback port, nothing kept on disk, its files
    under `workdir`; returns once it answers."""
    import redis

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = workdir / f"redis-{port}"
    directory.mkdir(parents=True)
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*command, "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("a redis-server of the benchmark did not start") from None
            time.sleep(0.05)
    client.close()
    return process, port
