"""Heartbeat ingest under load: SPARKS's production servers (and candidates) against a real Synapse.

    python bench/heartbeat_ingest.py --compare       # the whole comparison and the three targets, one command
    python bench/heartbeat_ingest.py --websocket     # production servers only: REST and websocket vs Synapse
    python bench/heartbeat_ingest.py --quick         # 10 users, 1 x 2 s (a smoke run)
    python bench/heartbeat_ingest.py --no-synapse    # SPARKS only (no Synapse install needed)
    python bench/heartbeat_ingest.py --through-proxy # also through nginx on one port, as deployed
    python bench/heartbeat_ingest.py --rest-servers prod,gunicorn-gthread-4x1 --ws-servers prod,granian-asgi-1
    python bench/heartbeat_ingest.py --profile steady   # also where a steady heartbeat's time goes (in-process)
    python bench/heartbeat_ingest.py --profile change   # ... or a state-changing signal's
    python bench/heartbeat_ingest.py --profile ws       # ... or the live server's, under websocket heartbeats

Layout (2 cores): the servers run on core 0 (`taskset -c 0`), the load generator (`wrk -t1`, or
the websocket client) on core 1. PostgreSQL and Redis are the machine's, not pinned.

SPARKS: `prod` is what `make serve-prod` runs, its command lines taken from `deploy/processes.py`
(web: REST; live: websockets and SSE); the candidates are in `bench/servers.py`. All named servers
run for the whole benchmark on ports of their own (idle ones cost nothing measurable), with a
Celery worker and beat, on their own PostgreSQL database and Redis db; 50 users with DRF tokens
and one device each, the hot state primed by one heartbeat. Cases: (a) steady heartbeats with an
increasing seq per device, (b) state-changing `visibility` hidden/visible (persisted and
published), (c) `GET /api/v1/config` with the token on the first REST server, a bare
authenticated DRF endpoint, as a reference, (a') steady heartbeats over `/ws/presence/`. The
steady case also counts database writes per request from `pg_stat_database`.

Synapse: `../shared/tools/synapse-local` with its files under /tmp (SYNAPSE_VENV, SYNAPSE_DIR),
SQLite, its rate limits relaxed (rc_presence 10,000/s); 50 users registered with the shared
secret. Cases: (a) steady `PUT /presence/{userId}/status {"presence":"online"}`, (b) PUTs
alternating online/unavailable. Every run of a SPARKS server comes right after a Synapse run of
the same case (steady PUTs for the websocket), and its ratio is to that run: the machine's speed
drifts, a pair a few seconds apart does not.

Targets, on the production servers measured direct (paired ratio's median): steady REST heartbeat
>= 2.0x Synapse's steady PUTs, state-changing signal >= 2.5x, websocket heartbeats >= 4.0x
Synapse's steady PUTs. `--through-proxy` figures (nginx in front) are reported, not judged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack
import servers

# Two copies of the repository may run this benchmark on one machine at once (each on ports of its
# own): BENCH_DB_NAME and BENCH_REDIS_DB keep their data apart (BENCH_CHANNEL_PREFIX their pub/sub).
DB_NAME = os.environ.get("BENCH_DB_NAME", "sparks_presence_bench_http")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "13"))
# The baseline copy's own (`servers.in_baseline`), with `prod-baseline`.
BASELINE_REDIS_DB = int(os.environ.get("BENCH_BASELINE_REDIS_DB", str(REDIS_DB + 1)))
SYNAPSE_TOOL = _stack.ROOT.parent / "shared" / "tools" / "synapse-local"
SYNAPSE_HOME = Path(os.environ.get("BENCH_SYNAPSE_HOME", "/tmp/sparks-bench-synapse"))
VENV_BIN = Path(sys.executable).parent
NGINX = "/usr/sbin/nginx"
PROXIED = "prod via nginx"

# nginx in front of the production servers with the proxy settings of a deployment: one port,
# keep-alive to the upstreams (else every request pays a new connection to the server), the
# websocket upgrade, no buffering for the SSE stream, timeouts longer than a heartbeat interval.
# An idle upstream connection is dropped by nginx before the server drops it (granian closes one
# after 30 s, uvicorn after 5 s): nginx does not resend a POST that met a connection closed under
# it, it answers 502. And one failure does not take the only server out of rotation for 10 s
# (max_fails=0): measured, a stale connection had turned into thousands of 502s.
NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream web {{ server 127.0.0.1:{web_port} max_fails=0; keepalive 32; keepalive_timeout 20s; }}
    upstream live {{ server 127.0.0.1:{live_port} max_fails=0; keepalive 32; keepalive_timeout 4s; }}
    map $http_upgrade $connection_upgrade {{ default upgrade; "" ""; }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        # Every location sets all its headers: one proxy_set_header in a location drops all the
        # server block's (nginx inherits them only into a level that sets none), and Django then
        # saw the upstream's name as the Host and refused it.
        location /ws/ {{
            proxy_pass http://live;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
        location = /api/v1/peers/stream {{
            proxy_pass http://live;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 1h;
        }}
        location / {{
            proxy_pass http://web;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

WRK_SCRIPT = r"""
local mode, seqbase = nil, 0
local users = {}
local seq = {}
local i = 0

function init(args)
  mode = args[1]
  seqbase = tonumber(args[3])
  for line in io.lines(args[2]) do
    local token, id, path = line:match("^(%S+)%s+(%S+)%s+(%S+)$")
    table.insert(users, {token = token, id = id, path = path})
  end
end

function request()
  i = i + 1
  local u = users[(i % #users) + 1]
  local n = (seq[u.id] or 0) + 1
  seq[u.id] = n
  local s = string.format("%.0f", seqbase + n)
  local odd = (n % 2) == 1
  if mode == "ours_steady" then
    return wrk.format("POST", u.path, {["Authorization"] = "Token " .. u.token, ["Content-Type"] = "application/json"},
      '{"signals":[{"type":"heartbeat","seq":' .. s .. '}]}')
  elseif mode == "ours_change" then
    return wrk.format("POST", u.path, {["Authorization"] = "Token " .. u.token, ["Content-Type"] = "application/json"},
      '{"signals":[{"type":"visibility","value":"' .. (odd and "hidden" or "visible") .. '","seq":' .. s .. '}]}')
  elseif mode == "ours_config" then
    return wrk.format("GET", u.path, {["Authorization"] = "Token " .. u.token})
  elseif mode == "synapse_steady" then
    return wrk.format("PUT", u.path, {["Authorization"] = "Bearer " .. u.token, ["Content-Type"] = "application/json"},
      '{"presence":"online"}')
  elseif mode == "synapse_change" then
    return wrk.format("PUT", u.path, {["Authorization"] = "Bearer " .. u.token, ["Content-Type"] = "application/json"},
      '{"presence":"' .. (odd and "unavailable" or "online") .. '"}')
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


# --- helpers ------------------------------------------------------------------------------------


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def seq_base() -> int:
    """Increasing across runs: a run's seqs are base+1, base+2, ... (milliseconds x 1000)."""
    time.sleep(0.002)
    return time.time_ns() // 1_000


def run_wrk(args, mode: str, base_url: str, users_file: Path, script: Path) -> dict:
    cmd = [
        *(["taskset", "-c", args.load_cpu] if args.load_cpu else []),
        "wrk",
        "-t1",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        base_url,
        "--",
        mode,
        str(users_file),
        str(seq_base()),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCHJSON "))
    result = json.loads(line.removeprefix("BENCHJSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    return result


def summarize(results: list[dict]) -> dict:
    return {
        "rps": _stack.median([r["rps"] for r in results]),
        "p50_ms": _stack.median([r["p50_us"] / 1e3 for r in results]),
        "p99_ms": _stack.median([r["p99_us"] / 1e3 for r in results]),
        "requests": sum(r["requests"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "runs": [round(r["rps"], 1) for r in results],
        "paired": [round(r["rps"] / r["synapse_rps"], 3) for r in results if r.get("synapse_rps")],
    }


# --- SPARKS ---------------------------------------------------------------------------------


class Sparks:
    def __init__(self, args, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.base = f"http://127.0.0.1:{args.port}"
        self.users: list[tuple[str, str]] = []  # (token, device id)
        self.procs: list[subprocess.Popen] = []

    def environment(self) -> dict[str, str]:
        env = {**os.environ, **_stack.server_environment(DB_NAME, REDIS_DB)}
        env["BENCH_BASELINE_REDIS_URL"] = _stack.redis_url(BASELINE_REDIS_DB)
        if self.args.rate_limits == "off":
            env.update(dict.fromkeys(_stack.UNREACHABLE_RATE_LIMITS, "off"))
        return env

    def setup(self) -> None:
        _stack.flush_redis(REDIS_DB)
        _stack.flush_redis(BASELINE_REDIS_DB)
        _stack.create_database(DB_NAME)
        _stack.setup_django(DB_NAME, REDIS_DB)
        from rest_framework.authtoken.models import Token

        from orgs.models import Membership, Organization, User
        from presence import services

        org = Organization.objects.create(slug="bench", name="Bench")
        for i in range(self.args.users):
            user = User.objects.create(username=f"bench{i:02d}", password="!")
            Membership.objects.create(user=user, organization=org)
            token = Token.objects.create(user=user)
            device, _ = services.register_device(user, f"installation-{i:02d}", "bench laptop")
            self.users.append((token.key, device.device_id))
        _stack.close_django()

    def start_server(self, kind: str, name: str, port: int, profile_to: Path | None = None) -> str:
        """Start REST (`kind` "rest") or websocket ("ws") server `name` of bench/servers.py on
        `port`, pinned to the servers' core; return its base URL once it answers. With
        `profile_to`, a single-process server runs under cProfile, its stats written there when
        it stops."""
        table = servers.REST_SERVERS if kind == "rest" else servers.WS_SERVERS
        _, command = table[name]
        argv = command(VENV_BIN, "127.0.0.1", port)
        if profile_to is not None:
            argv = [sys.executable, "-m", "cProfile", "-o", str(profile_to), *argv]
        cmd = [*(["taskset", "-c", self.args.server_cpu] if self.args.server_cpu else []), *argv]
        log = open(self.workdir / f"{kind}-{name}.log", "w")  # noqa: SIM115  (closed with the process)
        self.procs.append(subprocess.Popen(cmd, cwd=_stack.ROOT, env=self.environment(), stdout=log, stderr=log))
        base = f"http://127.0.0.1:{port}"
        _stack.wait_http(base + "/api/v1/config", timeout=60)
        return base

    def start_proxy(self, port: int, web_port: int, live_port: int) -> str:
        """nginx in front of the production web and live servers, as deployed: one port, /ws/ and
        the SSE stream to the live server, the rest to the web server. Its own config, pid and
        temporary files in the bench's directory; not a daemon (stopped with the servers)."""
        directory = self.workdir / "nginx"
        directory.mkdir()
        conf = directory / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=directory, port=port, web_port=web_port, live_port=live_port))
        cmd = [
            *(["taskset", "-c", self.args.server_cpu] if self.args.server_cpu else []),
            NGINX, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log"),
        ]  # fmt: skip
        log = open(directory / "stderr.log", "w")  # noqa: SIM115  (closed with the process)
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=log))
        base = f"http://127.0.0.1:{port}"
        _stack.wait_http(base + "/api/v1/config")
        return base

    def start_worker(self, baseline: bool = False) -> None:
        """A Celery worker with beat, on the servers' core: the expiry sweep and the database
        writes behind the hot path (PRESENCE_PERSIST_INTERVAL_SECONDS) run during the runs. With
        `baseline`, the baseline copy's own, on its Redis db (`servers.in_baseline`)."""
        env = self.environment()
        name = "baseline-worker" if baseline else "worker"
        cmd = [
            str(VENV_BIN / "celery"),
            "-A", "sparks_site", "worker", "--beat", "--pool", "solo", "--loglevel", "WARNING",
            "--schedule", str(self.workdir / f"{name}-beat-schedule"),
        ]  # fmt: skip
        if baseline:
            cmd = servers.in_baseline(cmd)
        if self.args.server_cpu:
            cmd = ["taskset", "-c", self.args.server_cpu, *cmd]
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115  (closed with the process)
        self.procs.append(subprocess.Popen(cmd, cwd=_stack.ROOT, env=env, stdout=log, stderr=log))

    def written_behind(self, timeout: float = 20.0) -> tuple[float, int, int]:
        """Wait until the database holds every user's hot decision: (seconds waited, users whose
        presence row equals the hot decision, users)."""
        import psycopg
        import redis

        from presence.hot import layout

        client = redis.Redis.from_url(_stack.redis_url(REDIS_DB), decode_responses=True)
        started = time.monotonic()
        while True:
            pending = _stack.waiting_to_persist(client)
            decisions = {}
            # Every shard's user hashes: <prefix><shard's tag><user key prefix><user id>.
            for key in client.scan_iter(f"{layout.KEY_PREFIX}*:{layout.USER_KEY_PREFIX}*"):
                dec = client.hget(key, layout.FIELD_DECISION)
                if dec:
                    decisions[int(key.rsplit(":", 1)[1])] = json.loads(dec)
            with psycopg.connect(_stack.database_url(DB_NAME), autocommit=True) as conn:
                rows = dict(conn.execute("SELECT user_id, status FROM presence_presencestate").fetchall())
            equal = sum(1 for uid, dec in decisions.items() if rows.get(uid) == dec["status"])
            waited = time.monotonic() - started
            if (pending == 0 and equal == len(decisions)) or waited > timeout:
                return waited, equal, len(decisions)
            time.sleep(0.25)

    def signal(self, token: str, device_id: str, signal: dict) -> dict:
        status, body = http(
            "POST",
            f"{self.base}/api/v1/devices/{device_id}/signals",
            {"signals": [signal]},
            {"Authorization": f"Token {token}"},
        )
        if status != 202:
            raise SystemExit(f"signal answered {status}: {body}")
        return body

    def prime(self, signal_type: str = "heartbeat", value: str | None = None) -> None:
        """One signal per device (the steady state before a run)."""
        seq = seq_base()
        for token, device_id in self.users:
            self.signal(token, device_id, {"type": signal_type, "value": value, "seq": seq})

    def users_file(self, kind: str) -> Path:
        path = self.workdir / f"sparks-{kind}.txt"
        with path.open("w") as f:
            for token, device_id in self.users:
                url = "/api/v1/config" if kind == "config" else f"/api/v1/devices/{device_id}/signals"
                f.write(f"{token} {device_id} {url}\n")
        return path

    def db_counters(self) -> dict:
        import psycopg

        with psycopg.connect(_stack.database_url(DB_NAME), autocommit=True) as conn:
            row = conn.execute(
                "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database "
                "WHERE datname = current_database()"
            ).fetchone()
        return dict(zip(("xact_commit", "tup_inserted", "tup_updated", "tup_deleted"), row, strict=True))

    def stop(self) -> None:
        _stack.stop_processes(self.procs)

    def cleanup(self) -> None:
        _stack.drop_database(DB_NAME)
        _stack.flush_redis(REDIS_DB)


# --- Synapse --------------------------------------------------------------------------------


class Synapse:
    def __init__(self, args) -> None:
        self.args = args
        self.dir = SYNAPSE_HOME / "data"
        self.env = {
            **os.environ,
            "SYNAPSE_VENV": str(SYNAPSE_HOME / "venv"),
            "SYNAPSE_DIR": str(self.dir),
            "SYNAPSE_PORT": str(args.synapse_port),
        }
        self.base = f"http://127.0.0.1:{args.synapse_port}"
        self.users: list[tuple[str, str]] = []  # (access token, user id)
        self.version = None

    def tool(self, *argv: str) -> str:
        cmd = [*(["taskset", "-c", self.args.server_cpu] if self.args.server_cpu else []), str(SYNAPSE_TOOL), *argv]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=True).stdout

    def start(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)  # a fresh homeserver each run
        # synapse-local already relaxes every rate limit it knows (rc_presence 1000/s, burst
        # 1000); the override only restates the presence one so a change of the tool's default
        # cannot silently throttle this benchmark.
        self.dir.mkdir(parents=True)
        (self.dir / "override.yaml").write_text("rc_presence:\n  per_user: {per_second: 10000, burst_count: 10000}\n")
        status = json.loads(self.tool("start").strip().splitlines()[-1])
        self.version = status.get("version")

    def register(self, count: int) -> None:
        import hashlib
        import hmac

        secret = next(
            line.split(":", 1)[1].strip().strip('"')
            for line in (self.dir / "secrets.yaml").read_text().splitlines()
            if line.startswith("registration_shared_secret")
        )
        for i in range(count):
            name, password = f"bench{i:02d}", f"bench-password-{i:02d}"
            _, nonce = http("GET", self.base + "/_synapse/admin/v1/register")
            mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
            mac.update(b"\x00".join([nonce["nonce"].encode(), name.encode(), password.encode(), b"notadmin"]))
            status, body = http(
                "POST",
                self.base + "/_synapse/admin/v1/register",
                {
                    "nonce": nonce["nonce"],
                    "username": name,
                    "password": password,
                    "admin": False,
                    "mac": mac.hexdigest(),
                },
            )
            if status != 200:
                raise SystemExit(f"Synapse registration failed: {status} {body}")
            self.users.append((body["access_token"], body["user_id"]))

    def path(self, user_id: str) -> str:
        return f"/_matrix/client/v3/presence/{urllib.parse.quote(user_id, safe='')}/status"

    def prime(self, presence: str = "online") -> None:
        for token, user_id in self.users:
            status, body = http(
                "PUT", self.base + self.path(user_id), {"presence": presence}, {"Authorization": f"Bearer {token}"}
            )
            if status != 200:
                raise SystemExit(f"Synapse presence PUT answered {status}: {body}")

    def users_file(self, workdir: Path) -> Path:
        path = workdir / "synapse.txt"
        with path.open("w") as f:
            for token, user_id in self.users:
                f.write(f"{token} {user_id} {self.path(user_id)}\n")
        return path

    def stop(self) -> None:
        try:
            self.tool("stop")
        finally:
            if not self.args.keep and self.dir.exists():
                shutil.rmtree(self.dir)


# --- websocket heartbeats -------------------------------------------------------------------

# A minimal websocket client, as lean as wrk is for HTTP: on one core, a general-purpose client
# library (framing, masking, per-message tasks) ran out of CPU before the server did. Frames out are
# masked with a zero key (valid, and no XOR work); frames in are read by their length.
WS_CLIENT = r"""
import asyncio, base64, json, os, struct, sys, time

try:
    import uvloop
except ImportError:
    uvloop = None


class Socket:
    # Text frames out (mask key zero, so no masking work), frames in.

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host, port, path):
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise SystemExit(f"handshake failed: {head[:200]!r}")
        return cls(reader, writer)

    def send(self, text: bytes):
        n = len(text)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        self.writer.write(header + b"\0\0\0\0" + text)

    async def recv(self) -> bytes:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        payload = await self.reader.readexactly(n)
        if b0 & 0x0F == 0x8:
            raise ConnectionError(f"closed by the server: {payload!r}")
        return payload


async def main(url, users_file, connections, duration, seqbase):
    rest = url.split("://", 1)[1]
    hostport, path = rest.split("/", 1)
    host, port = hostport.split(":")
    users = [line.split() for line in open(users_file)]
    sockets = []
    for token, device_id, _ in users:
        ws = await Socket.connect(host, int(port), f"/{path}?token={token}")
        await ws.recv()  # the snapshot
        sockets.append((ws, device_id))
    latencies, errors = [], 0
    seq = {d: seqbase for _, d in sockets}
    deadline = time.monotonic() + duration

    async def worker(k):
        nonlocal errors
        mine = sockets[k::connections]
        n = 0
        while time.monotonic() < deadline:
            ws, device_id = mine[n % len(mine)]
            n += 1
            seq[device_id] += 1
            t0 = time.perf_counter()
            ws.send(b'{"type":"signals","id":%d,"device_id":"%s","signals":[{"type":"heartbeat","seq":%d}]}'
                    % (n, device_id.encode(), seq[device_id]))
            while True:
                reply = await ws.recv()
                kind = reply[:24].replace(b" ", b"")
                if kind.startswith(b'{"type":"ack"'):
                    break
                if kind.startswith(b'{"type":"error"'):
                    errors += 1
                    break
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(min(connections, len(sockets)))))
    elapsed = time.perf_counter() - t0
    for ws, _ in sockets:
        ws.writer.close()
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, round(q / 100 * (len(latencies) - 1)))]
    print("BENCHJSON " + json.dumps({"requests": len(latencies), "duration_us": elapsed * 1e6, "errors": errors,
          "p50_us": pick(50) * 1e6, "p99_us": pick(99) * 1e6}))

if uvloop is not None:
    uvloop.install()
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])))
"""


def run_ws(args, sparks: Sparks, script: Path, base: str) -> dict:
    users_file = sparks.users_file("signals")
    cmd = [
        *(["taskset", "-c", args.load_cpu] if args.load_cpu else []),
        sys.executable,
        str(script),
        base.replace("http://", "ws://", 1) + "/ws/presence/",
        str(users_file),
        str(args.connections),
        str(args.duration),
        str(seq_base()),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = json.loads(next(line for line in out.splitlines() if line.startswith("BENCHJSON ")).split(" ", 1)[1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


# --- in-process profile of one kind of signal request -----------------------------------------


def profile_signals(sparks: Sparks, count: int, mode: str) -> None:
    """Signal requests through the WSGI application (what a gunicorn worker calls), in this
    process: µs per request without and with pyinstrument, and where the time goes. `steady`
    sends heartbeats, `change` alternates each device's visibility (every request changes the
    user's visible status)."""
    import io

    os.environ.update(_stack.server_environment(DB_NAME, REDIS_DB))
    import django

    django.setup()
    from sparks_site.wsgi import application as handler

    seq = {device_id: seq_base() for _, device_id in sparks.users}

    def call(token: str, device_id: str) -> None:
        seq[device_id] += 1
        if mode == "change":
            value = "hidden" if seq[device_id] % 2 else "visible"
            signal = {"type": "visibility", "value": value, "seq": seq[device_id]}
        else:
            signal = {"type": "heartbeat", "seq": seq[device_id]}
        body = json.dumps({"signals": [signal]}).encode()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": f"/api/v1/devices/{device_id}/signals",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "HTTP_HOST": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": f"Token {token}",
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
        }
        statuses = []
        b"".join(handler(environ, lambda status, headers, *a: statuses.append(status)))
        if not statuses[0].startswith("202"):
            raise SystemExit(f"in-process signal answered {statuses[0]}")

    def loop(n: int) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            token, device_id = sparks.users[i % len(sparks.users)]
            call(token, device_id)
        return (time.perf_counter() - t0) / n * 1e6

    from django.db import connection

    loop(200)  # warm up
    plain = loop(count)
    queries: list[str] = []

    def record(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        loop(len(sparks.users))
    print(f"\nin-process {mode} signal (WSGI application, no HTTP server): {plain:.0f} µs per request")
    print(f"SQL queries per {mode} signal: {len(queries) / len(sparks.users):.2f}")
    for sql in sorted(set(queries)):
        print(f"  {sql[:150]}")
    try:
        from pyinstrument import Profiler
    except ImportError:
        # The standard library's profiler: heavier per call, but it names the functions.
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.enable()
        loop(count)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        return
    profiler = Profiler(interval=0.0002)
    profiler.start()
    loop(count)
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False))


def profile_websocket(args, sparks: Sparks, workdir: Path) -> None:
    """Websocket heartbeats for one run against a live server (uvicorn, one process) under
    cProfile: where the server's time goes, its own functions and the server's."""
    import pstats

    stats = workdir / "live.prof"
    name = "uvicorn"
    base = sparks.start_server("ws", name, args.ws_port + 50, profile_to=stats)
    server = sparks.procs[-1]
    ws_script = workdir / "ws_profile_client.py"
    ws_script.write_text(WS_CLIENT)
    result = run_ws(args, sparks, ws_script, base)
    # SIGINT: uvicorn re-raises the signal it stopped on, and only an interrupt (not a TERM)
    # lets cProfile write its stats on the way out.
    server.send_signal(signal.SIGINT)
    server.wait(timeout=30)
    sparks.procs.remove(server)
    print(f"\nwebsocket heartbeats on {name} under cProfile: {result['rps']:.0f} msg/s")
    for order in ("tottime", "cumulative"):
        pstats.Stats(str(stats)).sort_stats(order).print_stats(30)


# --- main -----------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def paired(ours: dict) -> float | None:
    """The median ratio of each run of ours to the Synapse run just before it: on a host whose
    speed drifts (a shared VM), a pair measured a few seconds apart is the fairer comparison than
    the two medians taken over the whole case."""
    pairs = ours.get("paired") or []
    return _stack.median(pairs) if pairs else None


TARGETS = {"steady": 2.0, "change": 2.5, "ws": 4.0}
PHASES = {
    "steady": ("(a) steady heartbeat, REST", "synapse_steady", "ours_steady"),
    "change": ("(b) state-changing visibility hidden/visible, REST", "synapse_change", "ours_change"),
    "ws": ("(a') steady heartbeat over the websocket", "synapse_steady", None),
}


def server_list(value: str, table: dict) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in table]
    if unknown:
        raise SystemExit(f"unknown server(s) {unknown}; one of: {', '.join(table)}")
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per run (default 15)")
    parser.add_argument("--runs", type=int, default=3, help="runs per case; the median is reported (default 3)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument(
        "--rest-servers",
        default="prod",
        help=f"REST servers side by side, comma-separated (default prod); of {', '.join(servers.REST_SERVERS)}",
    )
    parser.add_argument(
        "--ws-servers",
        default="prod",
        help=f"websocket servers (with --websocket; default prod); of {', '.join(servers.WS_SERVERS)}",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="the whole comparison: --websocket --through-proxy and every candidate of bench/servers.py",
    )
    parser.add_argument(
        "--through-proxy",
        action="store_true",
        help="also the production servers behind nginx on one port, as deployed (targets judge the direct ones)",
    )
    parser.add_argument("--port", type=int, default=18000, help="first REST server's port (the next ones follow)")
    parser.add_argument("--ws-port", type=int, default=18100, help="first websocket server's port")
    parser.add_argument("--proxy-port", type=int, default=18200)
    parser.add_argument("--synapse-port", type=int, default=18448)
    parser.add_argument("--server-cpu", default="0", help="core for the servers ('' for no pinning)")
    parser.add_argument("--load-cpu", default="1", help="core for the load generator ('' for no pinning)")
    parser.add_argument("--no-synapse", action="store_true", help="measure SPARKS only")
    parser.add_argument("--websocket", action="store_true", help="also websocket heartbeats over /ws/presence/")
    parser.add_argument(
        "--profile",
        choices=("steady", "change", "ws"),
        help="also profile one kind of signal request in-process, or websocket heartbeats in the live server",
    )
    parser.add_argument(
        "--rate-limits",
        choices=("checked", "off"),
        default="checked",
        help="checked on every request but never reached (default), or switched off: their cost is the difference",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10 users, 1 run of 2 s")
    parser.add_argument("--keep", action="store_true", help="keep the Synapse data directory")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.runs, args.users = 2, 1, 10
    rest_names = server_list(args.rest_servers, servers.REST_SERVERS)
    ws_names = server_list(args.ws_servers, servers.WS_SERVERS)
    if args.compare:
        args.websocket = args.through_proxy = True
        # A candidate that is what production runs already is measured once, as `prod`.
        rest_names = [n for n in servers.COMPARE_REST if n == "prod" or not servers.same_as_prod("rest", n)]
        ws_names = [n for n in servers.COMPARE_WS if n == "prod" or not servers.same_as_prod("ws", n)]
    if args.through_proxy:
        # The proxy fronts the production servers: measured direct too, side by side.
        rest_names = ["prod", *(n for n in rest_names if n != "prod")]
        ws_names = ["prod", *(n for n in ws_names if n != "prod")]
    if not rest_names:
        raise SystemExit("--rest-servers names no server")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    if (args.server_cpu or args.load_cpu) and shutil.which("taskset") is None:
        raise SystemExit("taskset is needed (util-linux), or pass --server-cpu '' --load-cpu ''")
    if args.through_proxy and not Path(NGINX).exists():
        raise SystemExit(f"--through-proxy needs nginx at {NGINX}: apt-get install -y nginx-light")
    ws_route = (_stack.ROOT / "presence" / "routing.py").exists() and (
        _stack.ROOT / "presence" / "consumers.py"
    ).exists()
    if args.websocket and not ws_route:
        raise SystemExit("--websocket needs presence/consumers.py and the ws/presence/ route")

    workdir = Path(tempfile.mkdtemp(prefix="sparks-bench-"))
    script = workdir / "load.lua"
    script.write_text(WRK_SCRIPT)
    sparks = Sparks(args, workdir)
    synapse = None if args.no_synapse else Synapse(args)
    print(
        f"heartbeat ingest: {args.users} users, {args.connections} connections, {args.runs} x {args.duration} s, "
        f"servers on core {args.server_cpu or '-'}, load on core {args.load_cpu or '-'}\n"
        f"prod = deploy/processes.py: web  {shlex_join(servers.REST_SERVERS['prod'][1](VENV_BIN, 'HOST', 0))}\n"
        f"                            live {shlex_join(servers.WS_SERVERS['prod'][1](VENV_BIN, 'HOST', 0))}"
    )
    # Every candidate server runs for the whole benchmark (idle ones cost nothing measurable), so
    # they are measured turn by turn within each round, each right after a Synapse run.
    rest: dict[str, str] = {}  # label -> base URL
    ws: dict[str, str] = {}
    runs: dict[tuple[str, str], list[dict]] = {}
    db_writes = None
    behind = None
    try:
        sparks.setup()
        for i, name in enumerate(rest_names):
            rest[name] = sparks.start_server("rest", name, args.port + i)
        if args.websocket or args.through_proxy:
            for i, name in enumerate(ws_names if args.websocket else ["prod"]):
                ws[name] = sparks.start_server("ws", name, args.ws_port + i)
        if args.through_proxy:
            proxied = sparks.start_proxy(args.proxy_port, args.port, args.ws_port)
            rest[PROXIED] = proxied
            if args.websocket:
                ws[PROXIED] = proxied
        if not args.websocket:
            ws.clear()
        sparks.base = rest[rest_names[0]]
        sparks.start_worker()
        if "prod-baseline" in rest_names + (ws_names if args.websocket else []):
            sparks.start_worker(baseline=True)
        sparks.prime()
        if synapse is not None:
            synapse.start()
            synapse.register(args.users)
            synapse.prime()
            print(f"Synapse {synapse.version} on {synapse.base}")
        print("REST servers: " + "; ".join(f"{n} {describe(n, 'rest')} on {b}" for n, b in rest.items()))
        if ws:
            print("websocket servers: " + "; ".join(f"{n} {describe(n, 'ws')} on {b}" for n, b in ws.items()))
        ours_signals = sparks.users_file("signals")
        ours_config = sparks.users_file("config")
        theirs = synapse.users_file(workdir) if synapse is not None else None

        partner: dict[str, float] = {}  # phase -> req/s of the latest Synapse run

        def record(phase: str, server: str, result: dict) -> None:
            if server == "synapse":
                partner[phase] = result["rps"]
            elif phase in partner:
                result["synapse_rps"] = partner[phase]  # its pair: the Synapse run just before
            runs.setdefault((phase, server), []).append(result)
            # Progress, as the whole comparison takes a while.
            print(f"  {phase:6} {server:24} {result['rps']:8.0f}/s", file=sys.stderr, flush=True)

        def synapse_run(phase: str, mode: str) -> None:
            if synapse is not None:
                if mode == "synapse_change":
                    synapse.prime("online")
                record(phase, "synapse", run_wrk(args, mode, synapse.base, theirs, script))

        # A short untimed run against each server first: a fresh process's first seconds (imports
        # on first use, caches filling) are slower, and would weigh on whichever pair came first.
        if args.runs:
            warm_up = argparse.Namespace(**{**vars(args), "duration": min(args.duration, 3)})
            if synapse is not None:
                run_wrk(warm_up, "synapse_steady", synapse.base, theirs, script)
            for base in rest.values():
                run_wrk(warm_up, "ours_steady", base, ours_signals, script)

        # (a) steady. pg_stat_database is flushed by idle backends within ~10 s: wait around the block.
        if args.runs:
            time.sleep(11)
        before = sparks.db_counters()
        for _ in range(args.runs):
            for name, base in rest.items():
                synapse_run("steady", "synapse_steady")
                record("steady", name, run_wrk(args, "ours_steady", base, ours_signals, script))
        if args.runs:
            time.sleep(11)
            after = sparks.db_counters()
            steady_requests = sum(r["requests"] for (phase, _), rs in runs.items() if phase == "steady" for r in rs)
            steady_requests -= sum(r["requests"] for r in runs.get(("steady", "synapse"), []))
            db_writes = {k: (after[k] - before[k]) / max(1, steady_requests) for k in before}

        # (b) state-changing: each run starts from visible / online, its first signal changes it.
        for _ in range(args.runs):
            for name, base in rest.items():
                synapse_run("change", "synapse_change")
                sparks.prime("visibility", "visible")
                record("change", name, run_wrk(args, "ours_change", base, ours_signals, script))
                behind = sparks.written_behind()
        # (c) the reference: a bare authenticated DRF endpoint, on the first REST server.
        for _ in range(args.runs):
            record("config", rest_names[0], run_wrk(args, "ours_config", rest[rest_names[0]], ours_config, script))
        # (d) websocket heartbeats, each run after a Synapse steady run.
        if ws:
            ws_script = workdir / "ws_client.py"
            ws_script.write_text(WS_CLIENT)
            for _ in range(args.runs):
                for name, base in ws.items():
                    synapse_run("ws", "synapse_steady")
                    record("ws", name, run_ws(args, sparks, ws_script, base))
        if args.profile == "ws":
            profile_websocket(args, sparks, workdir)
        elif args.profile:
            sparks.stop()
            profile_signals(sparks, 2000 if not args.quick else 200, args.profile)
    finally:
        sparks.stop()
        if synapse is not None:
            synapse.stop()
        _stack.close_django()
        sparks.cleanup()
        proxy_log = workdir / "nginx" / "error.log"
        if proxy_log.exists() and proxy_log.stat().st_size:
            print("nginx error log (last lines):\n" + "\n".join(proxy_log.read_text().splitlines()[-5:]))
        shutil.rmtree(workdir, ignore_errors=True)

    results = {f"{phase}/{server}": summarize(rs) for (phase, server), rs in runs.items()}
    print(
        f"\n{'case / server':34} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'x Syn':>6} {'paired':>6}  runs (req/s)"
    )
    verdicts = []
    for phase, (title, _, _) in PHASES.items():
        if not any(p == phase for p, _ in runs):
            continue
        print(title)
        theirs_ = results.get(f"{phase}/synapse")
        for (p, server), _ in runs.items():
            if p != phase:
                continue
            r = results[f"{phase}/{server}"]
            if server == "synapse":
                x = pair = "1.00"
            elif theirs_ is None:
                x = pair = "-"
            else:
                x = ratio(r["rps"], theirs_["rps"])
                value = paired(r)
                pair = f"{value:.2f}" if value is not None else "n/a"
                if server == "prod":
                    met = value is not None and value >= TARGETS[phase]
                    verdicts.append(
                        f"{title}, production servers / Synapse: paired {pair} (medians {x}; "
                        f"target >= {TARGETS[phase]}: {'met' if met else 'MISSED'})"
                    )
            label = "Synapse" if server == "synapse" else server
            print(
                f"  {label:32} {r['rps']:8.0f} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {r['errors']:6d} "
                f"{x:>6} {pair:>6}  {r['runs']}{' pairs ' + str(r['paired']) if r['paired'] else ''}"
            )
    config = results.get(f"config/{rest_names[0]}")
    if config is not None:
        print(
            f"(c) GET /api/v1/config (bare DRF, token) on {rest_names[0]}: {config['rps']:.0f} req/s, "
            f"p50 {config['p50_ms']:.2f} ms, runs {config['runs']}"
        )
    if db_writes is not None:
        print(
            "\nDB per steady heartbeat (pg_stat_database): "
            f"{db_writes['xact_commit']:.3f} commits (read-only transactions count too), "
            f"{db_writes['tup_inserted']:.4f} rows inserted, {db_writes['tup_updated']:.4f} updated, "
            f"{db_writes['tup_deleted']:.4f} deleted"
        )
    if behind is not None:
        print(
            f"\nWritten behind after the last state-changing run: {behind[1]} of {behind[2]} users' presence rows "
            f"equal their hot decision, {behind[0]:.1f} s after the run ended (writes every "
            "PRESENCE_PERSIST_INTERVAL_SECONDS, default 2 s)"
        )
    if verdicts:
        print("\nTargets (direct servers, paired ratio to the Synapse run just before; proxied: reference only):")
        for line in verdicts:
            print("  " + line)
    steady = results.get(f"steady/{rest_names[0]}")
    if steady is not None and config is not None:
        print(f"steady heartbeat / bare DRF GET config = {ratio(steady['rps'], config['rps'])}")
    if args.json:
        print(json.dumps({"benchmark": "heartbeat_ingest", "results": results, "db_per_steady_request": db_writes}))
    failed = sum(r["errors"] for r in results.values())
    if failed:
        print(f"\n{failed} requests failed (non-2xx or socket errors): the figures are suspect")
    return 1 if failed else 0


def describe(name: str, kind: str) -> str:
    if name == PROXIED:
        return "(nginx in front of prod)"
    table = servers.REST_SERVERS if kind == "rest" else servers.WS_SERVERS
    return f"({table[name][0]})"


def shlex_join(argv: list[str]) -> str:
    import shlex

    return shlex.join([Path(argv[0]).name, *argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
