"""The unit costs a capacity model needs: Redis and PostgreSQL work per heartbeat, per state change
and per device flush, Redis memory per user and per device, CPU per call.

    python bench/unit_costs.py                # 1,000 users, 10,000 heartbeats, 2,000 changes
    python bench/unit_costs.py --quick        # 20 users, 400 heartbeats, 40 changes (a smoke run)
    python bench/unit_costs.py --shared-redis # on BENCH_REDIS_URL's server (figures include its other clients)

In-process, as deployed with `REDIS_URL` (write-behind on, rate limits checked but never reached,
the channel layer on Redis pub/sub): the real service functions against PostgreSQL (own database,
`sparks_presence_bench_units`, created and dropped) and Redis (db 11, flushed at start and end) on
loopback. The Redis figures are the server's own counters (`INFO stats`, `INFO commandstats`,
`INFO cpu`), which count every client of the server: so by default the script starts a
redis-server of its own (no persistence, a free port, stopped at the end) and nothing else is
counted. Snapshots of the counters bracket each measured loop; the snapshots' own INFO calls are
measured once with nothing between them and subtracted.

Measured, one user per device to start with (N users of one organization, devices signed in with
`services.register_device`):

1. a steady heartbeat, `services.steady_heartbeat` (the lane's one step, the Lua script), K of
   them round-robin over the N devices, none due for the device flush;
2. a state change, `services.ingest_signals` with one visibility signal (hidden, then visible
   again: away <-> available), M of them in rounds of at most one per user, each round followed by
   `services.persist_pending()` (the write-behind, every 2 s as deployed, so a user rarely changes
   twice between two runs): the Redis work of the change, then the Redis and PostgreSQL work of
   the write-behind (statements and rows counted with `connection.execute_wrapper`, transactions
   by counting commits), history rows included;
3. a device flush: with PRESENCE_DEVICE_FLUSH_SECONDS at 1 s, one heartbeat per device (each one
   marks its device due, at 180 s as deployed every 6th heartbeat of a 30 s client does), then
   `services.flush_device_activity()`;
4. Redis memory: `MEMORY USAGE` of every user hash, averaged, with 1, 2 and 3 devices per user
   (each new device signed in and heartbeating once, so its rate-limit field exists), and of the
   bookkeeping (`due`, `dirty`, `persist`, `history`, each the sum over the layout's shards) per
   member when they hold every user;
5. CPU: `time.process_time()` of this process over each loop: the Python side (service code,
   redis-py, Django) without the time spent waiting on Redis or PostgreSQL; the Redis server's own
   CPU (`INFO cpu`, user + sys) is given beside it.

Round trips are counted on the client: each `send_packed_command` of a redis-py connection of this
process is one write followed by one read of the replies (a pipeline is one). Commands are the
server's `cmdstat_*` deltas, those run inside a Lua script included (EVALSHA counts once, and so
does each command it runs).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack

DB_NAME = "sparks_presence_bench_units"
REDIS_DB = 11
HIDDEN, VISIBLE = "hidden", "visible"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--heartbeats", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="20 users, 400 heartbeats, 40 changes")
    parser.add_argument(
        "--shared-redis", action="store_true", help="use BENCH_REDIS_URL's server instead of a redis-server of its own"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and Redis db afterwards")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    if args.quick:
        args.users, args.heartbeats, args.changes = 20, 400, 40

    with private_redis(not args.shared_redis):
        return _stack.run_on_own_data(DB_NAME, REDIS_DB, lambda: run(args), keep=args.keep)


@contextmanager
def private_redis(wanted: bool):
    """A redis-server of the benchmark's own, on a free port, keeping nothing on disk."""
    if not wanted:
        yield
        return
    workdir = Path(tempfile.mkdtemp(prefix="sparks-bench-units-"))
    process, port = _stack.start_redis_server(workdir)
    _stack.REDIS_SERVER = f"redis://127.0.0.1:{port}"
    try:
        yield
    finally:
        _stack.stop_processes([process])
        shutil.rmtree(workdir, ignore_errors=True)


# --- Counting ------------------------------------------------------------------------------------


class RoundTrips:
    """Writes of packed commands by this process's redis-py connections (each one is followed by
    one read of the replies: one round trip), counted while `on`."""

    def __init__(self) -> None:
        from redis.connection import AbstractConnection

        self.on = False
        self.count = 0
        original = AbstractConnection.send_packed_command

        def send_packed_command(connection, command, check_health=True):
            if self.on:
                self.count += 1
            return original(connection, command, check_health)

        AbstractConnection.send_packed_command = send_packed_command


class RedisMeter:
    """The Redis server's counters over measured stretches of work (added up over several), less
    the snapshots' own INFO calls; round trips and this process's CPU beside them."""

    def __init__(self, client, round_trips: RoundTrips) -> None:
        self.client = client
        self.round_trips = round_trips
        self.overhead = Counter()
        self.overhead = self._measure_nothing()
        self.reset()

    def reset(self) -> None:
        self.total = Counter()
        self.commands = Counter()
        self.pairs = 0

    def snapshot(self) -> tuple[dict, dict]:
        info = self.client.info("stats", "commandstats", "cpu")
        figures = {
            "commands_processed": info["total_commands_processed"],
            "bytes_in": info["total_net_input_bytes"],
            "bytes_out": info["total_net_output_bytes"],
            "redis_cpu_us": round((info["used_cpu_user"] + info["used_cpu_sys"]) * 1e6),
        }
        calls = {k[len("cmdstat_") :]: v["calls"] for k, v in info.items() if k.startswith("cmdstat_")}
        figures["script_us"] = info.get("cmdstat_evalsha", {}).get("usec", 0)
        return figures, calls

    @contextmanager
    def measure(self):
        before, calls_before = self.snapshot()
        self.round_trips.count, self.round_trips.on = 0, True
        cpu = time.process_time()
        wall = time.perf_counter()
        try:
            yield
        finally:
            wall = time.perf_counter() - wall
            cpu = time.process_time() - cpu
            self.round_trips.on = False
            after, calls_after = self.snapshot()
            for key, value in after.items():
                self.total[key] += value - before[key] - self.overhead[key]
            for name, value in calls_after.items():
                if name != "info":
                    self.commands[name] += value - calls_before.get(name, 0)
            self.total["round_trips"] += self.round_trips.count
            self.total["client_cpu_us"] += round(cpu * 1e6)
            self.total["wall_us"] += round(wall * 1e6)
            self.pairs += 1

    def _measure_nothing(self) -> Counter:
        self.reset()
        for _ in range(5):
            with self.measure():
                pass
        # The snapshots' INFO traffic, per measured stretch (the cpu's is noise: not subtracted).
        return Counter({k: round(self.total[k] / 5) for k in ("commands_processed", "bytes_in", "bytes_out")})

    def per(self, units: int) -> dict:
        figures = {key: self.total[key] / units for key in self.total}
        figures["commands"] = sum(self.commands.values()) / units
        figures["by_command"] = {
            name: calls / units for name, calls in sorted(self.commands.items(), key=lambda kv: -kv[1]) if calls
        }
        return figures


class SqlMeter:
    """Statements Django's cursor sends and the rows they touch, by kind and table; transactions:
    the connection's commits, and each statement sent outside a transaction (autocommit: its own)."""

    TABLE = re.compile(r'(?:INSERT INTO|UPDATE|FROM)\s+"(\w+)"')

    def __init__(self) -> None:
        self.statements = Counter()
        self.rows = Counter()
        self.commits = 0

    @contextmanager
    def measure(self):
        from django.db import connection

        def count(execute, sql, params, many, context):
            if not connection.in_atomic_block:
                self.commits += 1
            result = execute(sql, params, many, context)
            kind = sql.lstrip().split(None, 1)[0].upper()
            match = self.TABLE.search(sql)
            key = f"{kind} {match.group(1) if match else ''}".strip()
            self.statements[key] += 1
            if kind in ("INSERT", "UPDATE", "DELETE"):
                self.rows[key] += max(context["cursor"].rowcount, 0)
            return result

        commit = connection.commit

        def counted_commit():
            self.commits += 1
            return commit()

        connection.commit = counted_commit
        try:
            with connection.execute_wrapper(count):
                yield
        finally:
            del connection.commit

    def written(self, kind: str, table: str) -> int:
        return self.rows[f"{kind} {table}"]


# --- The run -------------------------------------------------------------------------------------


def run(args) -> int:
    import redis
    from django.conf import settings
    from redis.commands.core import Script

    from orgs.models import Membership, Organization, User
    from presence import hot, services

    users_n = args.users
    store = hot.store()
    client = store.client
    meter_client = redis.Redis.from_url(_stack.redis_url(REDIS_DB), decode_responses=True)
    server = "a redis-server of its own" if not args.shared_redis else "BENCH_REDIS_URL's server, shared"
    config = meter_client.config_get("hash-max-listpack-*")
    print(
        f"unit costs: {users_n:,} users, {args.heartbeats:,} heartbeats, {args.changes:,} changes; "
        f"Redis {meter_client.info('server')['redis_version']} ({server}, db {REDIS_DB}; "
        f"hash-max-listpack-entries {config['hash-max-listpack-entries']}, "
        f"-value {config['hash-max-listpack-value']}), write-behind {settings.PRESENCE_WRITE_BEHIND}"
    )
    if not settings.PRESENCE_WRITE_BEHIND or not isinstance(store, hot.RedisHotStore):
        raise SystemExit("the benchmark needs the Redis hot store with write-behind (REDIS_URL set)")

    t0 = time.perf_counter()
    org = Organization.objects.create(slug="bench-units", name="Bench units")
    users = User.objects.bulk_create([User(username=f"units-{i:06d}", password="!") for i in range(users_n)])
    Membership.objects.bulk_create([Membership(user=u, organization=org) for u in users])
    users = list(User.objects.filter(pk__in=[u.pk for u in users]).order_by("pk"))
    devices = []  # (user, device id), one per user
    for i, user in enumerate(users):
        device, _ = services.register_device(user, f"installation-{i}-0", "bench laptop")
        devices.append((user, device.device_id))
    seqs = Counter()

    def beat(user, device_id) -> bool:
        seqs[device_id] += 1
        result = services.steady_heartbeat(user.pk, device_id, seqs[device_id])
        return result is not None and result[0] == 1

    # As in a deployment that has been running: every script loaded in Redis, the rate-limit
    # fields there (one heartbeat each), nothing to write behind.
    for script in vars(store).values():
        if isinstance(script, Script):
            script.sha = client.script_load(script.script)
    warm = sum(beat(u, d) for u, d in devices)
    services.persist_pending()
    services.flush_device_activity()
    print(f"populated in {time.perf_counter() - t0:.1f} s ({warm:,} of {users_n:,} first heartbeats steady)")

    # The bookkeeping exists once per shard: each figure of it is the sum over the shards' keys.
    due_keys = [shard.due for shard in store.shards]
    dirty_keys = [shard.dirty for shard in store.shards]
    persist_keys = [shard.persist for shard in store.shards]
    history_keys = [shard.history for shard in store.shards]

    round_trips = RoundTrips()
    meter = RedisMeter(meter_client, round_trips)
    checks: dict[str, bool] = {}
    results: dict[str, object] = {}

    # --- 1. steady heartbeats -------------------------------------------------------------------
    settings.PRESENCE_DEVICE_FLUSH_SECONDS = 3600  # none due for the flush: measured in 3.
    applied = 0
    with meter.measure():
        for i in range(args.heartbeats):
            applied += beat(*devices[i % users_n])
    heartbeat = meter.per(args.heartbeats)
    checks["every heartbeat applied on the steady lane"] = applied == args.heartbeats
    checks["one EVALSHA per heartbeat"] = meter.commands["evalsha"] == args.heartbeats
    checks["no device marked for the flush"] = total(client, "scard", dirty_keys) == 0
    results["heartbeat"] = heartbeat

    # --- 2. state changes and their write-behind --------------------------------------------------
    from presence.models import DeviceHistory, PresenceHistory
    from presence.services import Signal
    from presence.vocabulary import SignalType

    history_before = PresenceHistory.objects.count(), DeviceHistory.objects.count()
    change_meter = RedisMeter(meter_client, round_trips)
    persist_meter = RedisMeter(meter_client, round_trips)
    sql_changes, sql_persist = SqlMeter(), SqlMeter()
    visibility = dict.fromkeys((d for _, d in devices), VISIBLE)
    flipped = marked = 0
    persisted_users = 0
    memory_marks: dict[str, float] = {}
    done = 0
    while done < args.changes:
        batch = devices[: min(users_n, args.changes - done)]
        with change_meter.measure(), sql_changes.measure():
            for user, device_id in batch:
                value = HIDDEN if visibility[device_id] == VISIBLE else VISIBLE
                seqs[device_id] += 1
                signal = Signal(SignalType.VISIBILITY, value, seqs[device_id])
                outcome = services.ingest_signals(user, device_id, [signal])
                visibility[device_id] = value
                expected = "away" if value == HIDDEN else "available"
                flipped += outcome.applied == 1 and outcome.presence.status == expected
        marked += total(client, "zcard", persist_keys)
        if not memory_marks:  # the bookkeeping of a round of changes, one per user, before it is written
            memory_marks["persist"] = memory_usage_of(client, persist_keys) / len(batch)
            memory_marks["history"] = memory_usage_of(client, history_keys) / len(batch)
        with persist_meter.measure(), sql_persist.measure():
            persisted_users += services.persist_pending()
        done += len(batch)
    m = args.changes
    change = change_meter.per(m)
    persist = persist_meter.per(m)
    presence_rows = PresenceHistory.objects.count() - history_before[0]
    device_rows = DeviceHistory.objects.count() - history_before[1]
    checks["every change flipped the status (away <-> available)"] = flipped == m
    checks["every change marked its user for the write-behind"] = marked == m
    checks["no SQL statement on a change (written behind)"] = sum(sql_changes.statements.values()) == 0
    checks["the write-behind wrote every marked user"] = persisted_users == m
    checks["one presence and one device history row per change"] = presence_rows == m and device_rows == m
    left = total(client, "zcard", persist_keys) + total(client, "llen", history_keys)
    checks["nothing left to write behind"] = left == 0
    checks["the database equals the hot store after persist"] = database_equals_hot(store, users)
    results["change"] = change
    results["persist"] = {
        **persist,
        "sql_statements": sum(sql_persist.statements.values()) / m,
        "sql_by_kind": {k: v / m for k, v in sorted(sql_persist.statements.items())},
        "rows_by_kind": {k: v / m for k, v in sorted(sql_persist.rows.items())},
        "transactions": sql_persist.commits / m,
        "history_rows": (presence_rows + device_rows) / m,
        "rounds": change_meter.pairs,
    }

    # --- 3. device flush ----------------------------------------------------------------------------
    settings.PRESENCE_DEVICE_FLUSH_SECONDS = 1
    time.sleep(1.1)
    marking_meter = RedisMeter(meter_client, round_trips)
    with marking_meter.measure():
        marking_applied = sum(beat(u, d) for u, d in devices)
    dirty = total(client, "scard", dirty_keys)
    memory_marks["dirty"] = memory_usage_of(client, dirty_keys) / max(dirty, 1)
    due_members = total(client, "zcard", due_keys)
    memory_marks["due"] = memory_usage_of(client, due_keys) / max(due_members, 1)
    flush_meter = RedisMeter(meter_client, round_trips)
    sql_flush = SqlMeter()
    with flush_meter.measure(), sql_flush.measure():
        flushed = services.flush_device_activity()
    settings.PRESENCE_DEVICE_FLUSH_SECONDS = 180
    checks["every marking heartbeat applied and marked its device"] = marking_applied == users_n and dirty == users_n
    updated = sql_flush.written("UPDATE", "presence_device")
    checks["every marked device's row updated once"] = flushed == users_n == updated
    checks["the device rows equal the hot devices after the flush"] = devices_equal_hot(store, users)
    results["marking_heartbeat"] = marking_meter.per(users_n)
    results["flush"] = {
        **flush_meter.per(users_n),
        "sql_statements": sum(sql_flush.statements.values()) / users_n,
        "sql_by_kind": {k: v / users_n for k, v in sorted(sql_flush.statements.items())},
        "rows_by_kind": {k: v / users_n for k, v in sorted(sql_flush.rows.items())},
        "transactions": sql_flush.commits / users_n,
    }

    # --- 4. memory ------------------------------------------------------------------------------------
    memory = {}
    encodings = {}
    for per_user in (1, 2, 3):
        if per_user > 1:
            new = []
            for i, user in enumerate(users):
                device, _ = services.register_device(user, f"installation-{i}-{per_user - 1}", "bench phone")
                new.append((user, device.device_id))
            checks[f"device {per_user} of every user steady"] = sum(beat(u, d) for u, d in new) == users_n
        keys = [store.user_key(u.pk) for u in users]
        sizes = [memory_usage(client, key) for key in keys]
        counted = [len(hot.HotUser.parse(raw).devices) for raw in store.read_many([u.pk for u in users])]
        checks[f"{per_user} device(s) in every user hash"] = set(counted) == {per_user}
        memory[per_user] = sum(sizes) / len(sizes)
        encodings[per_user] = Counter(client.object("encoding", key) for key in keys).most_common(1)[0][0]
    results["memory"] = {
        "user_1_device": memory[1],
        "extra_device_2": memory[2] - memory[1],
        "extra_device_3": memory[3] - memory[2],
        "encoding": encodings,
        "per_member": memory_marks,
        "due_members": due_members,
    }

    ok = all(checks.values())
    report(args, results, checks)
    if args.json:
        print(json.dumps({"benchmark": "unit_costs", "users": users_n, "heartbeats": args.heartbeats,
                          "changes": m, **results, "verified": ok}))  # fmt: skip
    return 0 if ok else 1


def memory_usage(client, key: str) -> int:
    return client.memory_usage(key, samples=0) or 0


def total(client, command: str, keys: list[str]) -> int:
    """`command` (a count: zcard, scard, llen) of every key, pipelined, added up."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        getattr(pipe, command)(key)
    return sum(pipe.execute())


def memory_usage_of(client, keys: list[str]) -> int:
    """MEMORY USAGE (SAMPLES 0) of the keys, pipelined, added up (a missing key counts 0)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return sum(size or 0 for size in pipe.execute())


def hot_users_of(store, users) -> dict:
    from presence import hot

    ids = [u.pk for u in users]
    return dict(zip(ids, map(hot.HotUser.parse, store.read_many(ids)), strict=True))


def database_equals_hot(store, users) -> bool:
    """Every user's presence row holds the hot decision, every device row the hot device's state."""
    from presence import decisions
    from presence.models import PresenceState

    hot_users = hot_users_of(store, users)
    states = {s.user_id: s for s in PresenceState.objects.filter(user_id__in=hot_users)}
    if any(decisions.of_row(states[uid]) != hu.decision for uid, hu in hot_users.items()):
        return False
    return devices_equal_hot(store, users, fields=("last_seq", "visibility", "activity", "network"))


def devices_equal_hot(store, users, fields=("last_seq", "last_seen_at")) -> bool:
    from presence import hot
    from presence.models import Device

    hot_users = hot_users_of(store, users)
    rows = list(Device.objects.filter(user_id__in=hot_users))
    for row in rows:
        device = hot_users[row.user_id].devices[row.device_id]
        expected = {
            "last_seq": device.seq,
            "last_seen_at": hot.from_epoch(device.last_seen),
            "visibility": device.visibility,
            "activity": device.activity,
            "network": device.network,
        }
        if any(getattr(row, name) != expected[name] for name in fields):
            return False
    return len(rows) == sum(len(h.devices) for h in hot_users.values())


# --- Output --------------------------------------------------------------------------------------


def num(value: float) -> str:
    """A figure with its significant digits: 2,309 / 4.02 / 0.014."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3f}"


def _commands(by_command: dict[str, float]) -> str:
    return ", ".join(f"{name.upper()} {num(calls)}" for name, calls in by_command.items())


def report(args, results: dict, checks: dict[str, bool]) -> None:
    hb, ch, ps = results["heartbeat"], results["change"], results["persist"]
    mk, fl = results["marking_heartbeat"], results["flush"]
    print()
    print("Redis, per unit (server counters; round trips counted on the client)")
    print("| unit | round trips | commands | of them | total_commands_processed | bytes in | bytes out |")
    print("|---|---:|---:|---|---:|---:|---:|")
    rows = [
        ("steady heartbeat", hb),
        ("heartbeat marking its device for the flush", mk),
        ("state change (ingest_signals)", ch),
        ("its write-behind (persist_pending), per change", ps),
        ("device flush (flush_device_activity), per device", fl),
    ]
    for name, f in rows:
        print(
            f"| {name} | {num(f['round_trips'])} | {num(f['commands'])} | {_commands(f['by_command'])} | "
            f"{num(f['commands_processed'])} | {f['bytes_in']:.0f} | {f['bytes_out']:.0f} |"
        )
    print()
    print("PostgreSQL (statements Django's cursor sent and transactions, per 1,000 units; rows written per unit)")
    print("| unit | statements / 1,000 | of them | transactions / 1,000 | rows written per unit |")
    print("|---|---:|---|---:|---|")
    for name, f in (("state change, written behind", ps), ("device flush, per device", fl)):
        kinds = ", ".join(f"{k} {num(v * 1000)}" for k, v in f["sql_by_kind"].items())
        rows_ = ", ".join(f"{k} {num(v)}" for k, v in f["rows_by_kind"].items())
        print(f"| {name} | {num(f['sql_statements'] * 1000)} | {kinds} | {num(f['transactions'] * 1000)} | {rows_} |")
    print(
        f"history rows per change: {ps['history_rows']:.2f} (presence + device history); "
        f"{ps['rounds']} rounds of changes, persist_pending() after each"
    )
    print()
    print("CPU per unit, µs: this process (time.process_time(): Python, redis-py, Django; waiting excluded),")
    print("the Redis server (INFO cpu, user + sys; of it, inside Lua scripts: cmdstat_evalsha usec),")
    print("and wall time in this process (loopback)")
    print("| unit | process CPU µs | Redis CPU µs | of it, scripts µs | wall µs |")
    print("|---|---:|---:|---:|---:|")
    for name, f in rows:
        print(
            f"| {name} | {f['client_cpu_us']:.1f} | {f['redis_cpu_us']:.1f} | {f['script_us']:.1f} "
            f"| {f['wall_us']:.1f} |"
        )
    print()
    mem = results["memory"]
    print("Redis memory (MEMORY USAGE, SAMPLES 0), bytes")
    print("| what | bytes | encoding |")
    print("|---|---:|---|")
    print(f"| user hash, 1 device (average) | {mem['user_1_device']:.0f} | {mem['encoding'][1]} |")
    print(f"| + 2nd device | {mem['extra_device_2']:.0f} | {mem['encoding'][2]} |")
    print(f"| + 3rd device | {mem['extra_device_3']:.0f} | {mem['encoding'][3]} |")
    for name, size in mem["per_member"].items():
        print(f"| `{name}`, per member | {size:.0f} | |")
    print(
        f"(`due` holds {mem['due_members']:,} of {args.users:,} users; `dirty`, `persist` and `history` "
        "are empty between runs of their writers: their figures are per member when full)"
    )
    print()
    print(
        f"ratios: Redis commands per change / per heartbeat = {ch['commands'] / hb['commands']:.1f}; "
        f"bytes (in + out) per change / per heartbeat = "
        f"{(ch['bytes_in'] + ch['bytes_out']) / (hb['bytes_in'] + hb['bytes_out']):.1f}; "
        f"process CPU per change / per heartbeat = {ch['client_cpu_us'] / hb['client_cpu_us']:.1f}; "
        f"2nd device / user with 1 = {mem['extra_device_2'] / mem['user_1_device']:.2f}"
    )
    for name, ok in checks.items():
        if not ok:
            print(f"FAILED: {name}")
    print(f"verification: {'OK' if all(checks.values()) else 'FAILED'} ({len(checks)} checks)")


if __name__ == "__main__":
    raise SystemExit(main())
