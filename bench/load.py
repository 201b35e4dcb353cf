"""Load: simulated devices heartbeating and switching states against the real stack, then a check
that every user's final presence is what the engine decides from the devices' last signals.

    python bench/load.py                     # 200 users, 1-3 devices each, 30 s
    python bench/load.py --users 1000        # a bigger organization
    python bench/load.py --quick             # 20 users, 6 s (a smoke run)

The stack: the production web server (`deploy/processes.py`'s `web_command`, as `make serve-prod`
runs it) and a Celery worker with beat (the expiry sweep and the writes behind the hot path,
PRESENCE_PERSIST_INTERVAL_SECONDS) on core 0 (`taskset -c 0`); PostgreSQL and Redis are the
machine's, not pinned, with a database and a Redis db of this benchmark's own (created and
dropped, flushed). The load generator is this process, on core 1.

The scenario: `--users` users in one organization, each with 1-3 devices (signed in with
`services.register_device` before the run). Every device sends one request every 1.5-2.5 s
(uniformly at random; an open loop: a request is due at its time whatever the server does, and
its latency counts from then): mostly a heartbeat, otherwise an activity (active/idle),
visibility (visible/hidden) or call (start/end) change, each with a seq that increases per
device. A device's first request says "active". A device sends one request at a time: one
that fell due while the previous was unanswered goes out late, and none starts after the end.
A quarter of the users also set a manual status (`PUT /api/v1/me/status`, random status,
message and duration) or clear it (`DELETE`) every 6-14 s. That keeps each device at 24-40
requests a minute and a user with three devices under 120 a minute: below the server's rate
limits at their defaults (PRESENCE_RATE_LIMIT_DEVICE/_USER/_STATUS), which stay as they are; a
429 is an error here. Printed: throughput, latency (all requests and by kind), errors by
status, the servers' and the generator's CPU, and the verification.

With `--flood N`, one more user's device sends heartbeats back to back on N connections of its
own for the whole run, as a client gone wrong would: far over PRESENCE_RATE_LIMIT_DEVICE, so
nearly all of them are refused (429). Its answers are counted apart; the figures and the
verification are the other users', to compare with a run without it.

The verification: the generator keeps, per device, the state its last acknowledged request left
(a 202 that applied every signal), with the time window of that request (the server's clock
read happens between sending and receiving: the machine has one clock). A device whose request
failed (no answer, 5xx, a timeout: it may or may not have been applied) restates its whole
state with its next request, as a client that reconnects does; after the run, one still unsure
restates it once more. Then the traffic stops, the writes behind settle (Redis's `persist` set
empty), and for every user the expected presence is `presence.engine.aggregate` of
`PresenceInputs` built the way the server builds them (the organization's policy, default
preferences, the manual status, each device's last acknowledged state) at the two ends of the
time windows; it is compared with (a) the PostgreSQL `PresenceState` rows (the visible fields:
status, activity, message, currently active; the database is written when they change) and
(b) `GET /api/v1/me/presence` (those, the reason, and `last_active` within its window).

The generator: an asyncio HTTP/1.1 client of this script's own (on uvloop when installed), not
locust. A request costs it ~50 µs of CPU, so one core sends thousands a second; locust's
gevent users and per-request bookkeeping cost several times that, it would add a heavy
dependency, and the final check needs each device's acknowledged state inside the generator
anyway. The requests share a pool of keep-alive connections (`--connections`), as a reverse
proxy in front of the web server does; a pooled connection idle for over a second is not reused
(as nginx's deploy config has it), and a request that finds its reused connection closed
before any byte of the answer is sent again once on a fresh one (signals carry their seq and
the status calls are idempotent, so a repeat is harmless); such repeats are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack

sys.path.insert(0, str(_stack.ROOT))
from deploy import processes  # what `make serve-prod` runs

DB_NAME = "sparks_presence_bench_load"
REDIS_DB = 10
VENV_BIN = Path(sys.executable).parent
MANUAL_STATUSES = ("available", "busy", "away", "dnd", "offline")
MESSAGES = ("", "", "Workshop", "Back at 3", "Heads down")


# --- what each device and user last told the server ------------------------------------------

Window = tuple[float, float]  # (sent, answered): the server read its clock in between


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A device as the server holds it after its acknowledged signals (engine's `DeviceInput`)."""

    seen: Window
    active: Window | None
    activity: str = "active"
    visibility: str = "visible"
    in_call: bool = False

    def after(self, signals: list[dict], window: Window) -> DeviceState:
        """The state once `signals` were applied in order, at a moment within `window` (the
        SPARKS manual, "Signals": any signal is a sign of life; "active", "visible" and a call
        starting or ending are the user acting; bringing a window to the front makes it active)."""
        state = replace(self, seen=window)
        for signal in signals:
            kind, value = signal["type"], signal.get("value")
            if kind == "activity":
                state = replace(state, activity=value, active=window if value == "active" else state.active)
            elif kind == "visibility":
                state = replace(state, visibility=value)
                if value == "visible":
                    state = replace(state, activity="active", active=window)
            elif kind == "call":
                state = replace(state, in_call=value == "start", active=window)
        return state


@dataclass(frozen=True, slots=True)
class ManualState:
    status: str
    message: str
    duration: int | None
    set_at: Window

    def until(self, end: int) -> float | None:
        return None if self.duration is None else self.set_at[end] + self.duration


@dataclass
class Device:
    device_id: str
    label: str
    user: User
    acked: DeviceState
    seq: int = 0
    # What the device itself is doing (sent or not): restated after a failed request.
    activity: str = "active"
    visibility: str = "visible"
    in_call: bool = False
    unsure: bool = False

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def restatement(self) -> list[dict]:
        # Visibility first: "visible" also means active, which the activity then corrects.
        return [
            {"type": "visibility", "value": self.visibility, "seq": self.next_seq()},
            {"type": "activity", "value": self.activity, "seq": self.next_seq()},
            {"type": "call", "value": "start" if self.in_call else "end", "seq": self.next_seq()},
        ]


@dataclass
class User:
    pk: int
    token: str
    devices: list[Device] = field(default_factory=list)
    manual: ManualState | None = None
    manual_wanted: ManualState | None = None  # what the user last chose (sent or not)
    manual_unsure: bool = False
    changes_status: bool = False

    @property
    def auth(self) -> bytes:
        return f"Authorization: Token {self.token}\r\n".encode()


# --- setup and servers ------------------------------------------------------------------------


def seed(args, rng: random.Random) -> tuple[list[User], int, Device | None]:
    """The organization, its users with their tokens and 1-3 signed-in devices each; with
    `--flood`, one more user's device: the flooding client (not among the users checked)."""
    _stack.flush_redis(REDIS_DB)
    _stack.create_database(DB_NAME)
    _stack.setup_django(DB_NAME, REDIS_DB)
    from rest_framework.authtoken.models import Token

    from orgs.models import Membership, Organization
    from orgs.models import User as UserModel
    from presence import services

    organization = Organization.objects.create(slug="load", name="Load")
    rows = UserModel.objects.bulk_create(UserModel(username=f"load{i:05d}", password="!") for i in range(args.users))
    Membership.objects.bulk_create(Membership(user=row, organization=organization) for row in rows)
    tokens = Token.objects.bulk_create(Token(user=row, key=Token.generate_key()) for row in rows)
    users = []
    for i, (row, token) in enumerate(zip(rows, tokens, strict=True)):
        user = User(pk=row.pk, token=token.key, changes_status=rng.random() < args.status_share)
        for k in range(rng.randint(1, args.max_devices)):
            label = ("laptop", "phone", "desktop")[k]
            before = time.time()
            device, _ = services.register_device(row, f"load-{i}-{k}", label)
            # Signing in counts as the device being there and used.
            window = (before, time.time())
            user.devices.append(Device(device.device_id, label, user, DeviceState(seen=window, active=window)))
        users.append(user)
    flooder = None
    if args.flood:
        row = UserModel.objects.create(username="flooder", password="!")
        Membership.objects.create(user=row, organization=organization)
        device, _ = services.register_device(row, "flood-script", "script")
        user = User(pk=row.pk, token=Token.objects.create(user=row).key)
        flooder = Device(device.device_id, "script", user, DeviceState(seen=(0, 0), active=(0, 0)))
    _stack.close_django()
    return users, organization.pk, flooder


class Servers:
    def __init__(self, args, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.env = {**os.environ, **_stack.server_environment(DB_NAME, REDIS_DB)}
        # This scenario's clients keep to a real client's pace: the rate limits are the defaults.
        for key in _stack.UNREACHABLE_RATE_LIMITS:
            self.env.pop(key)
        self.pin = ["taskset", "-c", args.server_cpu] if args.server_cpu else []

    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115  (closed with the process)
        self.procs.append(subprocess.Popen([*self.pin, *cmd], cwd=_stack.ROOT, env=self.env, stdout=log, stderr=log))

    def start(self) -> None:
        args = self.args
        self._start("web", processes.web_command(VENV_BIN, "127.0.0.1", args.port, workers=args.workers))
        # The worker with beat: the writes behind (every 2 s) and the expiry sweep run during the load.
        self._start(
            "worker",
            [
                str(VENV_BIN / "celery"), "-A", "sparks_site", "worker", "--beat", "--pool", "solo",
                "--loglevel", "WARNING", "--schedule", str(self.workdir / "beat-schedule"),
            ],
        )  # fmt: skip
        _stack.wait_http(f"http://127.0.0.1:{args.port}/api/v1/config")

    def wait_for_beat(self, user_id: int, timeout: float = 60.0) -> None:
        """Until the worker has run a write behind that beat sent: a user is marked for it (a
        no-op write, the user's rows are current) and the mark must go."""
        import redis

        from presence import hot

        client = redis.Redis.from_url(_stack.redis_url(REDIS_DB))
        shard = hot.store().shard(user_id)
        client.zadd(shard.persist, {str(user_id): client.incr(shard.persist_seq)})
        deadline = time.monotonic() + timeout
        while client.zcard(shard.persist):
            if time.monotonic() > deadline:
                raise SystemExit(f"the Celery worker did not write behind within {timeout:.0f} s")
            time.sleep(0.1)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) so far of each server and its child processes."""
        parents, times = {}, {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                parents[int(entry)] = int(fields[1])
                times[int(entry)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        found = {}
        for name, process in zip(("web", "worker"), self.procs, strict=False):
            tree, grew = {process.pid}, True
            while grew:
                more = {pid for pid, parent in parents.items() if parent in tree} - tree
                tree |= more
                grew = bool(more)
            found[name] = sum(times.get(pid, 0.0) for pid in tree)
        return found

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.workdir.glob("*.log")))

    def stop(self) -> None:
        _stack.stop_processes(self.procs)


# --- the HTTP client --------------------------------------------------------------------------


class Pool:
    """Keep-alive HTTP/1.1 connections to one server, shared by every simulated device."""

    def __init__(self, port: int, size: int, timeout: float) -> None:
        self.port = port
        self.slots = asyncio.Semaphore(size)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.timeout = timeout
        self.opened = 0
        self.repeated = 0
        self.host = f"Host: 127.0.0.1:{port}\r\n".encode()

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        now = time.monotonic()
        while self.idle:
            reader, writer, used = self.idle.pop()
            if now - used < 1.0 and not reader.at_eof():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.opened += 1
        return reader, writer, False

    async def request(self, method: str, path: str, auth: bytes, body: bytes | None = None) -> tuple[int, bytes]:
        head = b"%s %s HTTP/1.1\r\n%s%s" % (method.encode(), path.encode(), self.host, auth)
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        raw = head + b"\r\n" + (body or b"")
        async with self.slots:
            for attempt in (0, 1):
                reader, writer, reused = await self._connection()
                try:
                    async with asyncio.timeout(self.timeout):
                        writer.write(raw)
                        status, answer, keep = await read_response(reader)
                except asyncio.IncompleteReadError as error:
                    writer.close()
                    if reused and attempt == 0 and not error.partial:
                        self.repeated += 1  # closed by the server while idle: send it again
                        continue
                    raise ConnectionError("connection closed mid-answer") from None
                except BaseException:
                    writer.close()
                    raise
                if keep:
                    self.idle.append((reader, writer, time.monotonic()))
                else:
                    writer.close()
                return status, answer
        raise AssertionError("unreachable")

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, keep = None, False, True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep = value.strip().lower() != b"close"
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        return status, b"".join(p[:-2] for p in parts), keep
    if length is None:
        return status, await reader.read(), False
    return status, await reader.readexactly(length), keep


# --- the traffic --------------------------------------------------------------------------------


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # seconds, from the moment a request was due
    # Seconds from due to sent of the requests whose device was not still waiting for its previous
    # answer: the generator's own delay. The others started late because of the server.
    lags: list[float] = field(default_factory=list)
    late_starts: int = 0
    timeline: list[tuple[float, float | None, float]] = field(default_factory=list)  # (due, lag, latency)
    kinds: dict[str, list[float]] = field(default_factory=dict)  # latencies by kind of request
    errors: dict[str, int] = field(default_factory=dict)
    not_applied: int = 0

    def record(self, kind: str, due: float, lag: float | None, latency: float) -> None:
        if lag is None:
            self.late_starts += 1
        else:
            self.lags.append(lag)
        self.latencies.append(latency)
        self.timeline.append((due, lag, latency))
        self.kinds.setdefault(kind, []).append(latency)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def call(pool: Pool, stats: Stats, method: str, path: str, auth: bytes, body: bytes | None) -> int | None:
    """One request; its status, or None when it got no answer (counted as an error)."""
    try:
        status, _ = await pool.request(method, path, auth, body)
    except TimeoutError:
        stats.error("timeout")
        return None
    except OSError as error:
        stats.error(f"connection ({type(error).__name__})")
        return None
    if not 200 <= status < 300:
        stats.error(str(status))
    return status


async def send_signals(pool: Pool, stats: Stats | None, device: Device, signals: list[dict]) -> bool:
    """Send `signals`; on a 202 that applied all of them, the device's acknowledged state moves on."""
    body = json.dumps({"signals": signals}, separators=(",", ":")).encode()
    path = f"/api/v1/devices/{device.device_id}/signals"
    sent = time.time()
    try:
        status, answer = await pool.request("POST", path, device.user.auth, body)
    except (TimeoutError, OSError) as error:
        if stats is not None:
            stats.error("timeout" if isinstance(error, TimeoutError) else f"connection ({type(error).__name__})")
        device.unsure = True
        return False
    window = (sent, time.time())
    if status == 202 and json.loads(answer)["signals_applied"] == len(signals):
        device.acked = device.acked.after(signals, window)
        device.unsure = False
        return True
    if stats is not None:
        if status == 202:
            stats.not_applied += 1
        else:
            stats.error(str(status))
    # A 4xx was refused as a whole; a 5xx or a partly applied batch may have changed something.
    device.unsure = device.unsure or status >= 500 or status == 202
    return False


def choose_signals(device: Device, rng: random.Random, change_share: float) -> list[dict]:
    if device.unsure:
        return device.restatement()
    roll = rng.random()
    if roll >= change_share:
        return [{"type": "heartbeat", "seq": device.next_seq()}]
    roll /= change_share
    if roll < 0.4:
        device.activity = "idle" if device.activity == "active" else "active"
        return [{"type": "activity", "value": device.activity, "seq": device.next_seq()}]
    if roll < 0.75:
        device.visibility = "hidden" if device.visibility == "visible" else "visible"
        if device.visibility == "visible":
            device.activity = "active"
        return [{"type": "visibility", "value": device.visibility, "seq": device.next_seq()}]
    device.in_call = not device.in_call
    return [{"type": "call", "value": "start" if device.in_call else "end", "seq": device.next_seq()}]


async def device_loop(device: Device, pool: Pool, stats: Stats, args, rng: random.Random, start: float, end: float):
    due = start + rng.uniform(0, args.interval_max)
    first = True
    while due < end:
        behind = time.monotonic() > due  # still waiting for its previous answer when this one fell due
        if behind and time.monotonic() >= end:
            break  # an overloaded server: no request starts after the run's end
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if first:  # the app starts: the user is there
            signals = [{"type": "activity", "value": "active", "seq": device.next_seq()}]
            first = False
        else:
            signals = choose_signals(device, rng, args.change_share)
        lag = None if behind else time.monotonic() - due
        await send_signals(pool, stats, device, signals)
        stats.record("restatement" if len(signals) > 1 else signals[0]["type"], due, lag, time.monotonic() - due)
        due += rng.uniform(args.interval_min, args.interval_max)


def next_manual(user: User, rng: random.Random) -> ManualState | None:
    if user.manual_wanted is not None and rng.random() < 0.5:
        return None
    duration = rng.choice((None, None, rng.randint(60, 3600)))
    return ManualState(rng.choice(MANUAL_STATUSES), rng.choice(MESSAGES), duration, (0.0, 0.0))


async def send_manual(pool: Pool, stats: Stats | None, user: User, wanted: ManualState | None) -> bool:
    user.manual_wanted = wanted
    sent = time.time()
    if wanted is None:
        method, body = "DELETE", None
    else:
        data = {"status": wanted.status, "message": wanted.message}
        if wanted.duration is not None:
            data["duration_seconds"] = wanted.duration
        method, body = "PUT", json.dumps(data).encode()
    status = await call(pool, stats or Stats(), method, "/api/v1/me/status", user.auth, body)
    if status == 200:
        user.manual = None if wanted is None else replace(wanted, set_at=(sent, time.time()))
        user.manual_unsure = False
        return True
    user.manual_unsure = user.manual_unsure or status is None or status >= 500
    return False


async def status_loop(user: User, pool: Pool, stats: Stats, args, rng: random.Random, start: float, end: float):
    due = start + rng.uniform(0, args.status_interval_max)
    while due < end:
        behind = time.monotonic() > due
        if behind and time.monotonic() >= end:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        wanted = user.manual_wanted if user.manual_unsure else next_manual(user, rng)
        lag = None if behind else time.monotonic() - due
        await send_manual(pool, stats, user, wanted)
        stats.record("status " + ("DELETE" if wanted is None else "PUT"), due, lag, time.monotonic() - due)
        due += rng.uniform(args.status_interval_min, args.status_interval_max)


async def warm_up(users: list[User], args) -> float:
    """One authenticated request per user before the run, so that the run starts with the
    servers booted and each token in the cache, as in a deployment that has been up for a while."""
    started = time.monotonic()
    pool = Pool(args.port, args.connections, timeout=30.0)
    statuses = await asyncio.gather(*(pool.request("GET", "/api/v1/me/presence", u.auth) for u in users))
    pool.close()
    failed = [status for status, _ in statuses if status != 200]
    if failed:
        raise SystemExit(f"warm-up: {len(failed)} requests failed ({sorted(set(failed))})")
    return time.monotonic() - started


def cpu_times() -> list[tuple[int, int]]:
    """(busy, total) jiffies per core, from /proc/stat."""
    found = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                values = [int(v) for v in line.split()[1:]]
                idle = values[3] + values[4]
                found.append((sum(values) - idle, sum(values)))
    return found


async def flood_loop(device: Device, pool: Pool, answers: dict[int, int], start: float, end: float) -> None:
    """A client gone wrong: heartbeats back to back on one connection of its own, for the whole run."""
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    path = f"/api/v1/devices/{device.device_id}/signals"
    while time.monotonic() < end:
        body = json.dumps({"signals": [{"type": "heartbeat", "seq": device.next_seq()}]}).encode()
        try:
            status, _ = await pool.request("POST", path, device.user.auth, body)
        except (TimeoutError, OSError):
            status = 0
        answers[status] = answers.get(status, 0) + 1


async def run_traffic(users: list[User], args, servers: Servers, flooder: Device | None = None) -> dict:
    rng = random.Random(args.seed)
    pool = Pool(args.port, args.connections, timeout=10.0)
    stats = Stats()
    start = time.monotonic() + 0.5
    end = start + args.duration
    flood: dict[int, int] = {}
    flood_pool = Pool(args.port, args.flood, timeout=10.0) if flooder is not None else None
    tasks = [flood_loop(flooder, flood_pool, flood, start, end) for _ in range(args.flood) if flooder is not None]
    tasks += [
        device_loop(d, pool, stats, args, random.Random(rng.random()), start, end) for u in users for d in u.devices
    ]
    tasks += [
        status_loop(u, pool, stats, args, random.Random(rng.random()), start, end) for u in users if u.changes_status
    ]
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    cpu_before, process_before, servers_before = cpu_times(), time.process_time(), servers.cpu_seconds()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - start
    cpu_after, process_after, servers_after = cpu_times(), time.process_time(), servers.cpu_seconds()
    busy = [(b1 - b0) / max(1, t1 - t0) for (b0, t0), (b1, t1) in zip(cpu_before, cpu_after, strict=True)]
    # After the run: a device or user whose last request may or may not have landed says it again.
    restated = 0
    for _ in range(3):
        pending = [d for u in users for d in u.devices if d.unsure]
        pending_users = [u for u in users if u.manual_unsure]
        if not pending and not pending_users:
            break
        restated += len(pending) + len(pending_users)
        await asyncio.sleep(1.0)
        await asyncio.gather(
            *(send_signals(pool, None, d, d.restatement()) for d in pending),
            *(send_manual(pool, None, u, u.manual_wanted) for u in pending_users),
        )
    pool.close()
    if flood_pool is not None:
        flood_pool.close()
    return {
        "stats": stats,
        "flood": flood,
        "start": start,
        "elapsed": elapsed,
        "core_busy": busy,
        "generator_cpu": (process_after - process_before) / elapsed,
        "server_cpu": {name: (servers_after[name] - servers_before[name]) / elapsed for name in servers_before},
        "connections_opened": pool.opened,
        "repeated": pool.repeated,
        "restated_after": restated,
        "still_unsure": sum(d.unsure for u in users for d in u.devices) + sum(u.manual_unsure for u in users),
    }


# --- the verification -----------------------------------------------------------------------------


class Expectation:
    """What the engine decides for the users' acknowledged inputs, as the server builds them."""

    def __init__(self, organization_id: int) -> None:
        from orgs.models import Organization
        from presence import selectors
        from presence.engine import PreferencesInput
        from presence.models import PresencePreferences

        self.policy = selectors.policy_input(selectors.policy_of(Organization.objects.get(pk=organization_id)))
        defaults = PresencePreferences()  # a user who never chose, as `presence_context_for` reads it
        self.preferences = PreferencesInput(
            use_calendar_busy=defaults.use_calendar_busy,
            include_microsoft_presence=defaults.include_microsoft_presence,
            priority=None,
        )

    def inputs(self, user: User, end: int):
        """The inputs with every time at one end of its window (0: sent, 1: answered)."""
        from presence.engine import DeviceInput, ManualInput, PresenceInputs
        from presence.vocabulary import ActivityValue, NetworkValue, Status, VisibilityValue

        devices = tuple(
            DeviceInput(
                device_id=d.device_id,
                label=d.label,
                last_seen=at(d.acked.seen[end]),
                last_active=at(d.acked.active[end]) if d.acked.active else None,
                activity=ActivityValue(d.acked.activity),
                visibility=VisibilityValue(d.acked.visibility),
                in_call=d.acked.in_call,
                network=NetworkValue.ONLINE,
            )
            for d in user.devices
        )
        manual = user.manual
        return PresenceInputs(
            devices=devices,
            manual=ManualInput(Status(manual.status), manual.message, at(manual.until(end)), at(manual.set_at[end]))
            if manual
            else None,
            preferences=self.preferences,
            policy=self.policy,
        )

    def decisions(self, user: User, now: Window) -> tuple:
        """The decisions at the two corners: every input as early and `now` as late as possible
        (the oldest inputs can be), and the reverse. Each timed rule moves one way with time, so
        what the server decided lies between them."""
        from presence.engine import aggregate

        return aggregate(self.inputs(user, 0), at(now[1])), aggregate(self.inputs(user, 1), at(now[0]))


def at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def visible(status, activity, status_msg, currently_active) -> tuple:
    return (str(status), str(activity), status_msg or None, bool(currently_active))


def decided(decision) -> tuple:
    """An engine decision's status, activity, message and activity flag, as `visible` reads them
    from the database and the API."""
    return visible(decision.status, decision.activity, decision.status_msg, decision.currently_active)


def check(observed: tuple, decisions: tuple, with_reason: bool) -> bool:
    wanted = [decided(d) + ((str(d.reason),) if with_reason else ()) for d in decisions]
    return observed in wanted


def within(moment: datetime | None, decisions: tuple) -> bool:
    ends = [d.last_active for d in decisions]
    if moment is None or None in ends:
        return moment is None and ends == [None, None]
    low, high = min(ends).timestamp() - 0.002, max(ends).timestamp() + 0.002
    return low <= moment.timestamp() <= high


def wait_written_behind(timeout: float = 30.0) -> float:
    """Seconds until the hot store has nothing left to write to the database."""
    import redis

    client = redis.Redis.from_url(_stack.redis_url(REDIS_DB))
    started = time.monotonic()
    while _stack.waiting_to_persist(client):
        if time.monotonic() - started > timeout:
            raise SystemExit(f"the writes behind did not settle within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def verify_database(users: list[User], expectation: Expectation, sweep_seconds: float) -> tuple[list[str], list[str]]:
    """Mismatches of the PresenceState rows (visible fields), and how many rows' reason lags.

    The rows of a change made by time alone are written by the sweep, every
    PRESENCE_SWEEP_INTERVAL_SECONDS: `now` is taken back by that much."""
    from presence.models import PresenceState

    started = time.time()
    rows = {
        row["user_id"]: row
        for row in PresenceState.objects.values(
            "user_id", "status", "activity", "status_msg", "currently_active", "reason"
        )
    }
    now = (started - sweep_seconds - 1.0, time.time())
    mismatches, reason_behind = [], []
    for user in users:
        row = rows.get(user.pk)
        decisions = expectation.decisions(user, now)
        if row is None:
            mismatches.append(f"user {user.pk}: no PresenceState row")
            continue
        observed = visible(row["status"], row["activity"], row["status_msg"], row["currently_active"])
        if not check(observed, decisions, with_reason=False):
            mismatches.append(f"user {user.pk} database: {observed}, engine: {describe(decisions)}")
        elif row["reason"] not in {str(d.reason) for d in decisions}:
            reason_behind.append(f"user {user.pk}: {row['reason']}, engine: {decisions[0].reason}")
    return mismatches, reason_behind


async def verify_api(users: list[User], expectation: Expectation, args) -> list[str]:
    pool = Pool(args.port, args.connections, timeout=10.0)
    mismatches: list[str] = []

    async def one(user: User) -> None:
        sent = time.time()
        try:
            status, body = await pool.request("GET", "/api/v1/me/presence", user.auth)
        except (TimeoutError, OSError) as error:
            mismatches.append(f"user {user.pk} API: {type(error).__name__}")
            return
        decisions = expectation.decisions(user, (sent, time.time()))
        if status != 200:
            mismatches.append(f"user {user.pk} API: HTTP {status}")
            return
        data = json.loads(body)
        observed = visible(data["status"], data["activity"], data["status_msg"], data["currently_active"])
        observed += (data["reason"],)
        last_active = datetime.fromisoformat(data["last_active"]) if data["last_active"] else None
        if not check(observed, decisions, with_reason=True):
            mismatches.append(f"user {user.pk} API: {observed}, engine: {describe(decisions, True)}")
        elif not within(last_active, decisions):
            mismatches.append(
                f"user {user.pk} API: last_active {data['last_active']}, engine: "
                + " .. ".join(str(d.last_active) for d in decisions)
            )

    await asyncio.gather(*(one(user) for user in users))
    pool.close()
    return mismatches


def describe(decisions: tuple, with_reason: bool = False) -> str:
    shown = {decided(d) + ((str(d.reason),) if with_reason else ()) for d in decisions}
    return " or ".join(str(s) for s in sorted(shown))


def print_timeline(stats: Stats, start: float) -> None:
    seconds: dict[int, list[tuple[float | None, float]]] = {}
    for due, lag, latency in stats.timeline:
        seconds.setdefault(int(due - start), []).append((lag, latency * 1000))
    print(f"\n{'second':>6} {'requests':>8} {'late':>5} {'lag p99 ms':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for second, rows in sorted(seconds.items()):
        lags = [r[0] * 1000 for r in rows if r[0] is not None]
        latencies = [r[1] for r in rows]
        print(
            f"{second:6d} {len(rows):8d} {len(rows) - len(lags):5d} {_stack.percentile(lags, 99):10.2f} "
            f"{_stack.percentile(latencies, 50):8.2f} {_stack.percentile(latencies, 99):8.2f}"
        )


# --- main -----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--max-devices", type=int, default=3, choices=(1, 2, 3), help="devices per user: 1 to this")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of traffic (default 30)")
    parser.add_argument("--interval-min", type=float, default=1.5, help="seconds between a device's requests, least")
    parser.add_argument("--interval-max", type=float, default=2.5, help="... and most")
    parser.add_argument("--change-share", type=float, default=0.25, help="share of requests that change a state")
    parser.add_argument("--status-share", type=float, default=0.25, help="share of users who set manual statuses")
    parser.add_argument("--status-interval-min", type=float, default=6.0)
    parser.add_argument("--status-interval-max", type=float, default=14.0)
    parser.add_argument("--connections", type=int, default=32, help="pooled keep-alive connections (default 32)")
    parser.add_argument(
        "--workers", type=int, default=processes.WEB_WORKERS, help="web server processes (default: production's)"
    )
    parser.add_argument("--port", type=int, default=18200)
    parser.add_argument("--server-cpu", default="0", help="core for the servers ('' for no pinning)")
    parser.add_argument("--load-cpu", default="1", help="core for this generator ('' for no pinning)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--flood", type=int, default=0, help="also one device sending heartbeats back to back on this many connections"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 users, 6 s")
    parser.add_argument("--timeline", action="store_true", help="also print the figures of each second")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    if args.quick:
        args.users, args.duration, args.connections = 20, 6.0, 8
    if args.server_cpu and shutil.which("taskset") is None:
        raise SystemExit("taskset is needed (util-linux), or pass --server-cpu ''")
    if args.load_cpu:
        os.sched_setaffinity(0, {int(args.load_cpu)})
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="sparks-bench-load-"))
    servers = Servers(args, workdir)
    try:
        t0 = time.monotonic()
        users, organization_id, flooder = seed(args, rng)
        devices = sum(len(u.devices) for u in users)
        print(
            f"load: {args.users} users, {devices} devices, {sum(u.changes_status for u in users)} of the users "
            f"setting manual statuses, {args.duration:.0f} s; a request per device every "
            f"{args.interval_min}-{args.interval_max} s ({args.change_share:.0%} of them state changes); "
            f"servers on core {args.server_cpu or '-'} (web server: {args.workers} processes, "
            f"Celery worker + beat), generator on core {args.load_cpu or '-'}, "
            f"{args.connections} pooled connections"
        )
        print(f"setup: users, tokens and devices in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        servers.start()
        servers.wait_for_beat(users[0].pk)
        warm = asyncio.run(warm_up(users, args))
        print(
            f"servers up in {time.monotonic() - t0:.1f} s; warm-up: one GET /api/v1/me/presence per user "
            f"({warm:.1f} s; every worker has served, every token is cached)"
        )
        run = asyncio.run(run_traffic(users, args, servers, flooder))
        settled = wait_written_behind()
        from django.conf import settings

        expectation = Expectation(organization_id)
        db_mismatches, reason_behind = verify_database(users, expectation, settings.PRESENCE_SWEEP_INTERVAL_SECONDS)
        api_mismatches = asyncio.run(verify_api(users, expectation, args))
    except BaseException:
        print(servers.logs())
        raise
    finally:
        servers.stop()
        _stack.close_django()
        _stack.drop_database(DB_NAME)
        _stack.flush_redis(REDIS_DB)
        shutil.rmtree(workdir, ignore_errors=True)

    stats: Stats = run["stats"]
    requests = len(stats.latencies)
    errors = sum(stats.errors.values())
    ms = [s * 1000 for s in stats.latencies]
    figures = {
        "users": args.users,
        "devices": devices,
        "duration_s": round(run["elapsed"], 2),
        "requests": requests,
        "by_kind": {
            kind: {
                "requests": len(values),
                "p50_ms": _stack.percentile([v * 1000 for v in values], 50),
                "p99_ms": _stack.percentile([v * 1000 for v in values], 99),
            }
            for kind, values in sorted(stats.kinds.items())
        },
        "rps": requests / run["elapsed"],
        "p50_ms": _stack.percentile(ms, 50),
        "p90_ms": _stack.percentile(ms, 90),
        "p99_ms": _stack.percentile(ms, 99),
        "max_ms": max(ms, default=float("nan")),
        "errors": errors,
        "error_rate": errors / requests if requests else float("nan"),
        "errors_by_status": stats.errors,
        "not_applied": stats.not_applied,
        "generator_lag_p99_ms": _stack.percentile([s * 1000 for s in stats.lags], 99),
        "late_starts": stats.late_starts,
        "generator_cpu": run["generator_cpu"],
        "server_cpu": run["server_cpu"],
        "server_cpu_ms_per_request": sum(run["server_cpu"].values()) * run["elapsed"] / requests * 1000,
        "core_busy": run["core_busy"],
        "connections_opened": run["connections_opened"],
        "repeated": run["repeated"],
        "restated_after": run["restated_after"],
        "settled_s": settled,
        "db_reason_behind": len(reason_behind),
        "mismatches": len(db_mismatches) + len(api_mismatches),
    }
    print(f"\nrequests: {requests} in {run['elapsed']:.1f} s = {figures['rps']:.0f} req/s")
    print(
        f"latency from due (ms): p50 {figures['p50_ms']:.2f}  p90 {figures['p90_ms']:.2f}  "
        f"p99 {figures['p99_ms']:.2f}  max {figures['max_ms']:.1f}"
    )
    kinds = figures["by_kind"].items()
    print(
        "  by kind: "
        + "; ".join(f"{n} {k['requests']} (p50 {k['p50_ms']:.1f}, p99 {k['p99_ms']:.1f})" for n, k in kinds)
    )
    by_status = ", ".join(f"{k}: {v}" for k, v in sorted(stats.errors.items())) or "none"
    print(f"errors: {errors} ({figures['error_rate']:.2%}); by status: {by_status}")
    if stats.not_applied:
        print(f"202s that did not apply every signal: {stats.not_applied}")
    server_cpu = run["server_cpu"]
    print(
        f"servers' CPU: web server {server_cpu['web']:.0%} of a core, Celery worker {server_cpu['worker']:.0%}: "
        f"{figures['server_cpu_ms_per_request']:.2f} ms per request; "
        "cores busy (everything on the machine) " + ", ".join(f"{i}: {b:.0%}" for i, b in enumerate(run["core_busy"]))
    )
    print(
        f"generator: {run['generator_cpu']:.0%} of its core, start lag p99 {figures['generator_lag_p99_ms']:.2f} ms "
        f"({stats.late_starts} requests started late, their device still waiting for its previous answer); "
        f"{run['connections_opened']} connections opened, {run['repeated']} requests repeated on a fresh one"
    )
    if run["restated_after"] or run["still_unsure"]:
        print(f"after the run: {run['restated_after']} restating requests, {run['still_unsure']} still unsure")
    print(f"writes behind settled {settled:.1f} s after the traffic stopped")
    if run["flood"]:
        flood = run["flood"]
        figures["flood"] = {str(status): count for status, count in sorted(flood.items())}
        print(
            f"flooding device ({args.flood} connections, not in the figures above): {sum(flood.values())} requests, "
            f"{sum(flood.values()) / run['elapsed']:.0f}/s; by status: "
            + ", ".join(f"{status or 'no answer'}: {count}" for status, count in sorted(flood.items()))
        )
    if args.timeline:
        print_timeline(stats, run["start"])
    if reason_behind:
        print(
            f"database rows whose reason is not the engine's, their visible fields right (a row is written "
            f"when those change): {len(reason_behind)}; " + "; ".join(reason_behind[:3])
        )
    if args.json:
        print(json.dumps({"benchmark": "load", **figures}))
    mismatches = db_mismatches + api_mismatches
    if run["still_unsure"]:
        mismatches.append(f"{run['still_unsure']} devices or users whose last request may not have landed")
    if mismatches:
        print(f"verification: {len(mismatches)} MISMATCHES")
        for line in mismatches[:20]:
            print("  " + line)
        return 1
    print("every user's PresenceState row and GET /api/v1/me/presence equal the engine's decision")
    print(f"verification: OK ({len(users)} users)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
