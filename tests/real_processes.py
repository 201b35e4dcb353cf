"""Helpers for the tests that start real processes (servers, Celery, a Redis of their own): a free
port, polling until a deadline, Celery processes logging to files, a private redis-server,
`manage.py runserver`; for the production deployments: nginx, a database of their own, the
environment they start from, the colleagues they know."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psycopg
import redis

PROJECT_DIR = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def eventually(
    what: str,
    check: Callable[[], T],
    timeout: float = 15.0,
    interval: float = 0.1,
    about: Callable[[], str] | None = None,
) -> T:
    """Poll `check` until it returns something true, and return that; after `timeout` seconds fail,
    saying `what` did not happen, with `check`'s last value and `about()` (a log, say)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            context = f"\n{about()}" if about is not None else ""
            raise AssertionError(f"{what}: not within {timeout} s (last: {result!r}){context}")
        time.sleep(interval)


class CeleryProcesses:
    """`celery -A sparks_site …` processes run with `env`, each logging to a file of its own in `workdir`."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *arguments: str, command: str | None = None) -> subprocess.Popen:
        """`celery <command> <arguments>` (the command is `name` unless given), logging to `<name>.log`."""
        with (self.workdir / f"{name}.log").open("a") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "sparks_site", command or name, "--loglevel=INFO", *arguments],
                cwd=PROJECT_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


class PrivateRedis:
    """A redis-server of the test's own that keeps nothing on disk: killed, it loses everything."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = (self.workdir / "redis.log").open("a")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        client = redis.Redis.from_url(self.url)

        def answers() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited:\n{(self.workdir / 'redis.log').read_text()}")
            with contextlib.suppress(redis.exceptions.ConnectionError):
                return client.ping()
            return False

        eventually("redis-server answers", answers, 15, interval=0.05)
        client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; every key is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


@contextlib.contextmanager
def runserver(env: dict[str, str], log_path: Path, timeout: float = 60) -> Iterator[RunningServer]:
    """`make run`'s server (`manage.py runserver`, daphne's, without the reloader) with `env` on a
    free port of 127.0.0.1, writing to `log_path`; there once it listens, stopped on leaving."""
    port = free_port()
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    running = RunningServer(f"http://127.0.0.1:{port}", log_path)

    def listening() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"the server exited:\n{running.log()}")
        return f"Listening on TCP address 127.0.0.1:{port}" in running.log()

    try:
        eventually("the server listens", listening, timeout, about=running.log)
        yield running
    finally:
        server.terminate()
        server.wait(10)


# The suite's own choices (tasks in-process without a beat, its Redis, its log format) are not
# `make run`'s.
_SUITE_ONLY = {"REDIS_URL", "CELERY_BROKER_URL", "CELERY_TASK_ALWAYS_EAGER", "BEAT_IN_PROCESS", "LOG_FORMAT"}


def make_run_environment(**settings: str) -> dict[str, str]:
    """The environment of `make run`'s server (the embedded default: no Redis, tasks and the beat
    in the server's process) on the test database, signing with the suite's SECRET_KEY (sessions
    and encrypted secrets made by a test read the same there), plus `settings`."""
    from django.conf import settings as django_settings

    from tests.databases import database_url

    env = {key: value for key, value in os.environ.items() if key not in _SUITE_ONLY}
    env.update(
        DATABASE_URL=database_url(),
        SECRET_KEY=django_settings.SECRET_KEY,
        DEBUG="1",  # plain http (no secure-only cookies), and /static/ served by runserver
        PYTHONUNBUFFERED="1",
    )
    env.update(settings)
    return env


NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")


def nginx_available() -> bool:
    """Whether nginx is at NGINX; when missing, installed as `make serve-prod` would (Debian's package)."""
    if not os.path.exists(NGINX):
        subprocess.run(["make", "-s", NGINX], cwd=PROJECT_DIR, capture_output=True, timeout=600)
    return os.access(NGINX, os.X_OK)


def deployment_environment() -> dict[str, str]:
    """The suite's environment without what must not reach a deployment: the outer make's
    variables, and the suite's choice to run tasks in-process."""
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CELERY_TASK_ALWAYS_EAGER", "BEAT_IN_PROCESS"}
    return {key: value for key, value in os.environ.items() if key not in drop}


@contextlib.contextmanager
def throwaway_database(suffix: str) -> Iterator[str]:
    """`postgres://…` of an empty PostgreSQL database beside the suite's (its name the suite's
    test database's and `suffix`), dropped on leaving."""
    from django.conf import settings

    from tests.databases import database_url

    name = f"{settings.DATABASES['default']['NAME']}_{suffix}"
    with psycopg.connect(database_url("postgres"), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        with psycopg.connect(database_url("postgres"), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage_shell(env: dict[str, str], code: str) -> str:
    """What `manage.py shell -c code` printed, run with `env` (a deployment's database)."""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


# Colleagues of one organization with API tokens, made in a deployment's own database.
_SEED = """
import json
from rest_framework.authtoken.models import Token
from orgs.models import Membership, User
from orgs.services import ensure_organization, set_membership
organization = ensure_organization("prod", "Production")
people = {}
for name in NAMES:
    user = User.objects.create_user(username=name, email=f"{name}@prod.example")
    set_membership(user, organization, Membership.Role.MEMBER)
    people[name] = {"token": Token.objects.create(user=user).key, "id": str(user.public_id)}
print(json.dumps(people))
"""


def seed_colleagues(env: dict[str, str], *names: str) -> dict[str, dict[str, str]]:
    """Members of one organization ("prod") in the deployment's database, by name: each one's API
    `token` and public `id`."""
    printed = manage_shell(env, f"NAMES = {list(names)!r}\n" + _SEED)
    return json.loads(printed.strip().splitlines()[-1])
