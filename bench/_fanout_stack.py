"""What both cases of bench/fanout.py share: the organization, the servers, one HTTP call, and
reading a server's CPU time and memory from /proc."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack

DB_NAME = "sparks_presence_bench_fanout"
REDIS_DB = 14
VENV_BIN = Path(sys.executable).parent
# Pub/sub channels are shared by every Redis db: another benchmark's organization 1 must not reach
# this one's sockets.
CHANNEL_PREFIX = os.environ.get("BENCH_CHANNEL_PREFIX", "sparksbench-fanout")


def create_organization(peers: int, changers: int = 1) -> dict:
    """The organization, its users and their tokens; the first `changers` users have a device each
    and change state during the run (their usernames sort first: the first snapshot page has them)."""
    _stack.flush_redis(REDIS_DB)
    _stack.create_database(DB_NAME)
    _stack.setup_django(DB_NAME, REDIS_DB)
    from rest_framework.authtoken.models import Token

    from orgs.models import Membership, Organization, User
    from presence import services

    organization = Organization.objects.create(slug="fanout", name="Fan-out")
    users = User.objects.bulk_create(User(username=f"peer{i:05d}", password="!") for i in range(peers))
    Membership.objects.bulk_create(Membership(user=user, organization=organization) for user in users)
    tokens = Token.objects.bulk_create(Token(user=user, key=Token.generate_key()) for user in users)
    devices = [services.register_device(user, "fanout-laptop", "laptop")[0].device_id for user in users[:changers]]
    plan = {
        "tokens": [token.key for token in tokens],
        "user_ids": [str(user.public_id) for user in users],
        "changer_id": str(users[0].public_id),
        "changer_device": devices[0],
        "changer_devices": devices,
    }
    _stack.close_django()
    return plan


class Servers:
    """`asgi_processes` live servers (deploy/processes.py's), on ws_port, ws_port + 1, …, and
    gunicorn for the REST changes."""

    def __init__(self, args: argparse.Namespace, workdir: Path, asgi_processes: int = 1) -> None:
        self.args = args
        self.workdir = workdir
        self.asgi_processes = asgi_processes
        self.procs: list[subprocess.Popen] = []
        environment = _stack.server_environment(DB_NAME, REDIS_DB)
        self.env = {**os.environ, **environment, "CHANNEL_LAYER_PREFIX": CHANNEL_PREFIX}
        self.pin = ["taskset", "-c", args.server_cpu] if args.server_cpu else []

    @property
    def ws_ports(self) -> list[int]:
        return [self.args.ws_port + k for k in range(self.asgi_processes)]

    @property
    def asgi_pids(self) -> list[int]:
        return [proc.pid for proc in self.procs[: self.asgi_processes]]

    def _start(self, name: str, cmd: list[str], url: str) -> None:
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115  (closed with the process)
        self.procs.append(subprocess.Popen([*self.pin, *cmd], cwd=_stack.ROOT, env=self.env, stdout=log, stderr=log))
        _stack.wait_http(url)

    def start(self) -> None:
        args = self.args
        for k, port in enumerate(self.ws_ports):
            name = "daphne" if k == 0 else f"daphne{k + 1}"
            self._start(
                name, _stack.asgi_server_command(args.asgi_server, port), f"http://127.0.0.1:{port}/api/v1/config"
            )
        self._start(
            "gunicorn",
            [
                str(VENV_BIN / "gunicorn"),
                "sparks_site.wsgi:application",
                "--bind",
                f"127.0.0.1:{args.port}",
                "--workers",
                str(args.workers),
                "--log-level",
                "warning",
            ],
            f"http://127.0.0.1:{args.port}/api/v1/config",
        )

    def stop(self) -> None:
        _stack.stop_processes(self.procs)

    def print_logs(self) -> None:
        for log in sorted(self.workdir.glob("*.log")):
            tail = log.read_text().splitlines(True)[-30:]
            print(f"--- {log.name} (tail)\n" + "".join(tail))


async def post_json(port: int, path: str, token: str, body: dict) -> int:
    """One HTTP/1.1 POST on the event loop (a blocking client would stall every socket's reads)."""
    payload = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Token {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + payload
    )
    await writer.drain()
    status_line = await reader.readline()
    await reader.read()
    writer.close()
    return int(status_line.split()[1])


def visibility_change(n: int) -> tuple[dict, str]:
    """A device's n-th change (from 0): hidden and visible in turn, and the status it makes."""
    hidden = n % 2 == 0
    body = {"signals": [{"type": "visibility", "value": "hidden" if hidden else "visible", "seq": n + 1}]}
    return body, "away" if hidden else "available"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/<pid>/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """A process's resident memory now (/proc/<pid>/status, VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
