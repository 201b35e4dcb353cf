"""Scaling with Redis Cluster masters: steady heartbeats on a single Redis, a cluster of one master
and a cluster of three, side by side in one run; throughput, the Redis work per heartbeat over all
masters, and each master's share of it.

    python bench/cluster_scaling.py            # 3,000 users, 2 client processes, 3 rounds of 10 s (~6 min)
    python bench/cluster_scaling.py --quick    # 64 users, 1 round of 1 s (a smoke run)
    python bench/cluster_scaling.py --masters 1,2,3,6 --clients 8   # a bigger machine

The configurations, each on Redis servers of the benchmark's own (loopback, free ports, no
persistence, stopped at the end): (a) a single redis-server, not in cluster mode, the hot store on
`REDIS_URL`; then per `--masters` count a Redis Cluster of that many masters and no replica
(`tests/redis_cluster.py`'s `LocalCluster`; a replica would only copy the writes, the bench measures
the masters' work), the hot store on `REDIS_CLUSTER_NODES` and `REDIS_URL` on one more plain
redis-server (the cache and the broker, idle here). PostgreSQL: a database of its own,
`sparks_presence_bench_cluster`, created and dropped. Every configuration gets the same workload on
users of its own: `--users` users of one organization, one device each, signed in with
`services.register_device` and given one signal with `services.ingest_signals` (the real hash:
devices, context, decision, rate limits), written behind with `services.persist_pending`.

The server timeouts (device and idle) are at 3,600 s, so no decision falls due during the run and
every heartbeat stays on the steady lane; the device flush at 3,600 s, so none marks its device.
The users are primed with the clock 90 s back (the service functions see a `timezone.now()` 90 s
early): a deployment that has been running, past the minute in which a fresh sign-in counts as
"active now". Their decisions are therefore due, and the first sweep (`services.sweep_expired`,
the real clock) decides them all again: measured as the "sweep, every user due" pass.

The load: `--clients` processes per configuration, each with Django set up on it, beating its
share of the devices round-robin through `services.steady_heartbeat` (the lane's one Lua step,
`RedisHotStore.heartbeat`), each heartbeat with a seq one higher, for `--duration` seconds, all
clients at once. After every process has warmed up (one heartbeat per device: connections to every
master open, the scripts loaded), each round measures every configuration in turn, starting one
further on each round; a round's ratio to its own (a) is what "x (a)" reports (the median over the
rounds).

Measured per configuration and round: heartbeats per second (all clients together); every master's
`INFO cpu` (user + sys) and `INFO commandstats` before and after: the Redis CPU per heartbeat over
all masters, and per master its share of the heartbeats (its EVALSHA calls) and of the CPU. The
clients' own CPU per heartbeat (`time.process_time()`), the machine's busy share (`/proc/stat`) and
the load average are printed beside them. The masters' idle CPU (cron, cluster bus) is measured
and printed, not subtracted.

On a machine with few cores the clients and the masters share them: total throughput cannot grow
with masters there. What carries to a bigger machine is each master's share of the Redis work and
its CPU per heartbeat; "hb/s at the busiest master's core full" projects from them where the Redis
side of the configuration saturates.

Optional passes, on each configuration (the sweep and the write-behind walk the 64 shards, one
pipeline per master): an empty sweep and an empty write-behind, each repeated and averaged; after
the rounds, one visibility change per user (`ingest_signals`) and the write-behind pass that
writes them all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack

DB_NAME = "sparks_presence_bench_cluster"
PRIME_AGE_SECONDS = 90
EMPTY_PASSES = 20
CHANGE_SEQ = 10**9  # above every heartbeat's seq of the run
ENV = {
    # No decision falls due during the run, no heartbeat marks its device for the flush: every
    # heartbeat is a steady one, with the same work.
    "PRESENCE_DEVICE_TIMEOUT_SECONDS": "3600",
    "PRESENCE_IDLE_TIMEOUT_SECONDS": "3600",
    "PRESENCE_DEVICE_FLUSH_SECONDS": "3600",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=2, help="client processes per configuration")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each measured run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--masters", default="1,3", help="cluster master counts, beside the single Redis")
    parser.add_argument("--no-passes", action="store_true", help="skip the sweep and write-behind passes")
    parser.add_argument("--quick", action="store_true", help="64 users, 1 round of 1 s")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker()
    if args.quick:
        args.users, args.duration, args.rounds = 64, 1.0, 1
    args.masters = [int(m) for m in args.masters.split(",") if m.strip()]
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise SystemExit("redis-server and redis-cli are needed (Debian: redis-server)")
    return Bench(args).run()


# --- Redis servers of the benchmark's own -----------------------------------------------------


def start_redis(workdir: Path) -> tuple[subprocess.Popen, int]:
    """A plain redis-server on a free loopback port, keeping nothing on disk."""
    return _stack.start_redis_server(workdir)


def start_cluster(workdir: Path, masters: int):
    """A Redis Cluster of `masters` masters and no replica."""
    sys.path.insert(0, str(_stack.ROOT))
    from tests.redis_cluster import LocalCluster

    return LocalCluster(workdir).start(masters=masters, replicas=0)


class Masters:
    """Every master's counters: CPU (user + sys, µs), EVALSHA calls and their µs, all commands, and
    of them COMMAND GETKEYS."""

    def __init__(self, addresses: list[str]) -> None:
        import redis

        self.addresses = addresses
        self.clients = [redis.Redis(host=a.rpartition(":")[0], port=int(a.rpartition(":")[2])) for a in addresses]

    def snapshot(self) -> list[dict[str, float]]:
        found = []
        for client in self.clients:
            info = client.info("cpu", "commandstats")
            evalsha = info.get("cmdstat_evalsha", {})
            found.append(
                {
                    "cpu_us": (info["used_cpu_user"] + info["used_cpu_sys"]) * 1e6,
                    "evalsha": evalsha.get("calls", 0),
                    "script_us": evalsha.get("usec", 0),
                    "commands": sum(
                        v["calls"] for k, v in info.items() if k.startswith("cmdstat_") and k != "cmdstat_info"
                    ),
                    # What redis-py's cluster client asks a node when it cannot tell a command's keys
                    "getkeys": info.get("cmdstat_command|getkeys", {}).get("calls", 0),
                }
            )
        return found

    @contextmanager
    def measure(self) -> Iterator[list[dict[str, float]]]:
        """The counters' growth over the block, per master (filled in when it ends)."""
        deltas: list[dict[str, float]] = []
        before = self.snapshot()
        yield deltas
        after = self.snapshot()
        deltas.extend({k: a[k] - b[k] for k in a} for a, b in zip(after, before, strict=True))

    def version(self) -> str:
        return self.clients[0].info("server")["redis_version"]

    def close(self) -> None:
        for client in self.clients:
            client.close()


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# --- The processes that do the work: Django set up on one configuration ----------------------------


class Worker:
    """A process of this script (`--worker`) on one configuration's environment, answering one JSON
    line per command line."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=_stack.ROOT,
        )

    def send(self, do: str, **fields) -> None:
        self.process.stdin.write(json.dumps({"do": do, **fields}) + "\n")
        self.process.stdin.flush()

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"{self.name} ended (exit status {self.process.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise SystemExit(f"{self.name} failed:\n{reply['error']}")
        return reply

    def call(self, do: str, **fields) -> dict:
        self.send(do, **fields)
        return self.receive()

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()


def worker() -> int:
    """`--worker`: commands from stdin, replies on the real stdout (what else prints goes to stderr)."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.path.insert(0, str(_stack.ROOT))
    import django

    django.setup()
    work = Work()
    replies.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        command = json.loads(line)
        do = command.pop("do")
        if do == "quit":
            break
        try:
            reply = getattr(work, do)(**command)
        except Exception:
            reply = {"error": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")
    _stack.close_django()
    return 0


class Work:
    """What a worker does: the driver primes the users and runs the passes, a client beats."""

    def __init__(self) -> None:
        from unit_costs import RoundTrips

        self.round_trips = RoundTrips()
        self.users: list = []
        self.devices: list[tuple[int, str]] = []
        self.seqs: list[int] = []

    @contextmanager
    def _counted(self, reply: dict) -> Iterator[None]:
        """Round trips, this process's CPU and wall time of the block, into `reply`."""
        self.round_trips.count, self.round_trips.on = 0, True
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            reply["wall_s"] = time.perf_counter() - wall
            reply["client_cpu_s"] = time.process_time() - cpu
            self.round_trips.on = False
            reply["round_trips"] = self.round_trips.count

    # The driver ------------------------------------------------------------------------------------

    def prime(self, users: int, slug: str, age: float) -> dict:
        from datetime import timedelta
        from unittest import mock

        from django.utils import timezone

        from orgs.models import Membership, Organization, User
        from presence import hot, services
        from presence.services import Signal
        from presence.vocabulary import ActivityValue, SignalType

        store = hot.store()
        # As after a deployment's first sweep on an empty store: the shards' epochs set (else the
        # sweep would take its rebuild path, and rebuild the other configurations' users here).
        store.lost_shards()
        t0 = time.perf_counter()
        org = Organization.objects.create(slug=slug, name=f"Bench {slug}")
        created = User.objects.bulk_create([User(username=f"{slug}-{i:06d}", password="!") for i in range(users)])
        Membership.objects.bulk_create([Membership(user=u, organization=org) for u in created])
        self.users = list(User.objects.filter(pk__in=[u.pk for u in created]).order_by("pk"))
        real_now = timezone.now
        applied = 0
        with mock.patch.object(timezone, "now", lambda: real_now() - timedelta(seconds=age)):
            for i, user in enumerate(self.users):
                device, _ = services.register_device(user, f"installation-{i}", "bench laptop")
                outcome = services.ingest_signals(
                    user, device.device_id, [Signal(SignalType.ACTIVITY, ActivityValue.ACTIVE, 1)]
                )
                applied += outcome.applied
                self.devices.append((user.pk, device.device_id))
            written = services.persist_pending()
        masters = [self._master_of(store, shard.due) for shard in store.shards]
        return {
            "devices": self.devices,
            "shard_masters": masters,
            "applied": applied,
            "written": written,
            "prime_s": time.perf_counter() - t0,
        }

    @staticmethod
    def _master_of(store, key: str) -> str:
        if store.target.is_cluster:
            return store.client.get_node_from_key(key).name
        kwargs = store.client.connection_pool.connection_kwargs
        return f"{kwargs['host']}:{kwargs['port']}"

    def sweep(self, repeat: int) -> dict:
        from presence import services

        reply: dict = {}
        with self._counted(reply):
            reply["swept"] = [services.sweep_expired() for _ in range(repeat)]
        return reply

    def due_within(self, seconds: float) -> dict:
        from presence import hot

        return {"due": len(hot.store().due(time.time() + seconds, 1_000_000))}

    def persist(self, repeat: int) -> dict:
        from presence import services

        reply: dict = {}
        with self._counted(reply):
            reply["written"] = [services.persist_pending() for _ in range(repeat)]
        return reply

    def change(self, seq: int) -> dict:
        """One visibility change per user (hidden: available -> away), each marking its user for
        the write-behind."""
        from presence import services
        from presence.services import Signal
        from presence.vocabulary import SignalType, VisibilityValue

        reply: dict = {"applied": 0, "away": 0}
        with self._counted(reply):
            for user, (_, device_id) in zip(self.users, self.devices, strict=True):
                outcome = services.ingest_signals(
                    user, device_id, [Signal(SignalType.VISIBILITY, VisibilityValue.HIDDEN, seq)]
                )
                reply["applied"] += outcome.applied
                reply["away"] += outcome.presence.status == "away"
        return reply

    # A client --------------------------------------------------------------------------------------

    def load(self, devices: list[list]) -> dict:
        """Its devices, and one heartbeat each: connections open, scripts loaded, as in a process
        that has been running."""
        self.devices = [(int(uid), did) for uid, did in devices]
        self.seqs = [1] * len(self.devices)  # the priming signal's
        return self._beat(len(self.devices), None)

    def beat(self, duration: float) -> dict:
        return self._beat(None, duration)

    def _beat(self, count: int | None, duration: float | None) -> dict:
        from presence import services

        devices, seqs, n = self.devices, self.seqs, len(self.devices)
        beats = steady = applied = 0
        cpu, start = time.process_time(), time.perf_counter()
        end = start + (duration or 0.0)
        i = 0
        while True:
            uid, device_id = devices[i]
            seqs[i] += 1
            result = services.steady_heartbeat(uid, device_id, seqs[i])
            beats += 1
            if result is not None:
                steady += 1
                applied += result[0] == 1
            i = i + 1 if i + 1 < n else 0
            if count is not None:
                if beats >= count:
                    break
            elif time.perf_counter() >= end:
                break
        return {
            "heartbeats": beats,
            "steady": steady,
            "applied": applied,
            "wall_s": time.perf_counter() - start,
            "client_cpu_s": time.process_time() - cpu,
        }


# --- The run ------------------------------------------------------------------------------------------


class Config:
    def __init__(self, key: str, label: str, masters: int, cluster: bool) -> None:
        self.key, self.label, self.masters, self.cluster = key, label, masters, cluster
        self.addresses: list[str] = []
        self.env: dict[str, str] = {}
        self.driver: Worker | None = None
        self.clients: list[Worker] = []
        self.meter: Masters | None = None
        self.shard_masters: list[str] = []
        self.results: dict = {"rounds": []}


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        labels = "abcdefghij"
        self.configs = [Config("single", "(a) single Redis", 1, cluster=False)]
        for i, masters in enumerate(args.masters, start=1):
            noun = "master" if masters == 1 else "masters"
            self.configs.append(Config(f"cluster-{masters}", f"({labels[i]}) cluster, {masters} {noun}", masters, True))
        self.servers: list[subprocess.Popen] = []
        self.clusters: list = []
        self.checks: dict[str, bool] = {}
        self.loads: list[tuple[float, float, float]] = []

    def run(self) -> int:
        args = self.args
        workdir = Path(tempfile.mkdtemp(prefix="sparks-bench-cluster-"))
        started = time.perf_counter()
        self.loads.append(os.getloadavg())
        _stack.create_database(DB_NAME)
        try:
            self.migrate(workdir)
            for config in self.configs:
                self.set_up(config, workdir)
            for round_ in range(args.rounds):
                shift = round_ % len(self.configs)
                for config in self.configs[shift:] + self.configs[:shift]:
                    self.measure(config, round_)
            if not args.no_passes:
                for config in self.configs:
                    self.write_behind_passes(config)
            self.loads.append(os.getloadavg())
            figures = self.figures()
            self.report(figures, time.perf_counter() - started)
            ok = all(self.checks.values())
            if args.json:
                print(json.dumps({"benchmark": "cluster_scaling", "users": args.users, "clients": args.clients,
                                  "duration": args.duration, "rounds": args.rounds, "configs": figures,
                                  "verified": ok}))  # fmt: skip
            return 0 if ok else 1
        finally:
            for config in self.configs:
                for w in [config.driver, *config.clients]:
                    if w is not None:
                        w.stop()
                if config.meter is not None:
                    config.meter.close()
            for cluster in self.clusters:
                cluster.stop()
            _stack.stop_processes(self.servers)
            _stack.drop_database(DB_NAME)
            shutil.rmtree(workdir, ignore_errors=True)

    def base_env(self) -> dict[str, str]:
        env = {**os.environ, **_stack.server_environment(DB_NAME, 0), **ENV}
        env.pop("REDIS_CLUSTER_NODES", None)
        return env

    def migrate(self, workdir: Path) -> None:
        process, port = start_redis(workdir)
        self.servers.append(process)
        self.aux_url = f"redis://127.0.0.1:{port}/0"  # REDIS_URL beside the clusters
        env = {**self.base_env(), "REDIS_URL": self.aux_url}
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=_stack.ROOT, env=env, check=True)

    def set_up(self, config: Config, workdir: Path) -> None:
        """Its Redis, its processes (set up side by side), its users primed, the sweep passes, every
        client warmed up."""
        args = self.args
        env = self.base_env()
        if config.cluster:
            cluster = start_cluster(workdir / config.key, config.masters)
            self.clusters.append(cluster)
            config.addresses = [node.address for node in cluster.masters()]
            env.update(REDIS_URL=self.aux_url, REDIS_CLUSTER_NODES=cluster.seeds)
        else:
            process, port = start_redis(workdir)
            self.servers.append(process)
            config.addresses = [f"127.0.0.1:{port}"]
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        config.env = env
        config.meter = Masters(config.addresses)
        config.driver = Worker(f"{config.key} driver", env)
        config.clients = [Worker(f"{config.key} client {j}", env) for j in range(args.clients)]
        for w in [config.driver, *config.clients]:
            w.receive()  # ready

        primed = config.driver.call("prime", users=args.users, slug=f"bench-{config.key}", age=PRIME_AGE_SECONDS)
        config.shard_masters = primed["shard_masters"]
        devices = primed["devices"]
        self.checks[f"{config.key}: every user primed (one signal applied each)"] = primed["applied"] == args.users
        self.checks[f"{config.key}: every shard on one of its masters"] = set(config.shard_masters) <= set(
            config.addresses
        )
        results = config.results
        results["prime_s"] = primed["prime_s"]
        results["redis_version"] = config.meter.version()

        if not args.no_passes:
            with config.meter.measure() as masters:
                reply = config.driver.call("sweep", repeat=1)
            self.checks[f"{config.key}: the first sweep decided every user again"] = reply["swept"] == [args.users]
            results["sweep_all_due"] = pass_figures(reply, masters, 1)
            with config.meter.measure() as masters:
                reply = config.driver.call("sweep", repeat=EMPTY_PASSES)
            self.checks[f"{config.key}: nobody due afterwards"] = reply["swept"] == [0] * EMPTY_PASSES
            results["sweep_empty"] = pass_figures(reply, masters, EMPTY_PASSES)
            with config.meter.measure() as masters:
                reply = config.driver.call("persist", repeat=EMPTY_PASSES)
            results["persist_empty"] = pass_figures(reply, masters, EMPTY_PASSES)
        else:
            config.driver.call("sweep", repeat=1)
        due = config.driver.call("due_within", seconds=1800)["due"]
        self.checks[f"{config.key}: no decision due within 30 minutes"] = due == 0

        warmed = [c.call("load", devices=devices[j :: args.clients]) for j, c in enumerate(config.clients)]
        self.checks[f"{config.key}: every warm-up heartbeat steady"] = sum(w["applied"] for w in warmed) == args.users
        idle = 1.0 if not args.quick else 0.3
        with config.meter.measure() as masters:
            time.sleep(idle)
        results["idle_cpu_us_per_s"] = [m["cpu_us"] / idle for m in masters]

    def measure(self, config: Config, round_: int) -> None:
        self.loads.append(os.getloadavg())
        busy0, total0 = busy_jiffies()
        with config.meter.measure() as masters:
            for client in config.clients:
                client.send("beat", duration=self.args.duration)
            replies = [client.receive() for client in config.clients]
        busy1, total1 = busy_jiffies()
        beats = sum(r["heartbeats"] for r in replies)
        applied = sum(r["applied"] for r in replies)
        window = max(r["wall_s"] for r in replies)
        self.checks[f"{config.key}: every heartbeat applied on the steady lane (round {round_ + 1})"] = applied == beats
        self.checks[f"{config.key}: one EVALSHA per heartbeat on the masters (round {round_ + 1})"] = (
            sum(m["evalsha"] for m in masters) == beats
        )
        self.checks[f"{config.key}: one command per heartbeat, the script's own aside (round {round_ + 1})"] = (
            sum(m["commands"] for m in masters) == 4 * beats  # EVALSHA, and HMGET and HSET 2 in it
        )
        config.results["rounds"].append(
            {
                "heartbeats": beats,
                "hb_per_s": sum(r["heartbeats"] / r["wall_s"] for r in replies),
                "window_s": window,
                "client_cpu_us": sum(r["client_cpu_s"] for r in replies) * 1e6,
                "machine_busy": (busy1 - busy0) / max(total1 - total0, 1),
                "masters": masters,
            }
        )

    def write_behind_passes(self, config: Config) -> None:
        users = self.args.users
        reply = config.driver.call("change", seq=CHANGE_SEQ)
        self.checks[f"{config.key}: every change applied (away)"] = reply["applied"] == users == reply["away"]
        with config.meter.measure() as masters:
            reply = config.driver.call("persist", repeat=1)
        self.checks[f"{config.key}: the write-behind wrote every changed user"] = reply["written"] == [users]
        config.results["persist_all"] = pass_figures(reply, masters, 1)
        left = config.driver.call("persist", repeat=1)["written"]
        self.checks[f"{config.key}: nothing left to write behind"] = left == [0]

    # --- Figures and output ----------------------------------------------------------------------------

    def figures(self) -> dict:
        base = self.configs[0]
        out = {}
        for config in self.configs:
            rounds = config.results["rounds"]
            per_round = []
            for r, b in zip(rounds, base.results["rounds"], strict=True):
                cpu = sum(m["cpu_us"] for m in r["masters"])
                base_cpu = sum(m["cpu_us"] for m in b["masters"])
                per_round.append(
                    {
                        "hb_per_s": r["hb_per_s"],
                        "ratio": r["hb_per_s"] / b["hb_per_s"],
                        "redis_us": cpu / r["heartbeats"],
                        "redis_ratio": (cpu / r["heartbeats"]) / (base_cpu / b["heartbeats"]),
                    }
                )
            beats = sum(r["heartbeats"] for r in rounds)
            per_master = []
            total_cpu = sum(m["cpu_us"] for r in rounds for m in r["masters"])
            window = sum(r["window_s"] for r in rounds)
            for i, address in enumerate(config.addresses):
                cpu = sum(r["masters"][i]["cpu_us"] for r in rounds)
                hb = sum(r["masters"][i]["evalsha"] for r in rounds)
                script = sum(r["masters"][i]["script_us"] for r in rounds)
                per_master.append(
                    {
                        "address": address,
                        "shards": config.shard_masters.count(address),
                        "hb_share": hb / beats,
                        "cpu_share": cpu / total_cpu,
                        "redis_us_per_hb": cpu / hb if hb else float("nan"),
                        "script_us_per_hb": script / hb if hb else float("nan"),
                        "cores": cpu / 1e6 / window,
                        "idle_us_per_s": config.results["idle_cpu_us_per_s"][i],
                    }
                )
            hb_shares = [m["hb_share"] for m in per_master]
            cpu_shares = [m["cpu_share"] for m in per_master]
            busiest_cpu = max(sum(r["masters"][i]["cpu_us"] for r in rounds) for i in range(len(config.addresses)))
            out[config.key] = {
                "label": config.label,
                "masters": config.masters,
                "hb_per_s": statistics.median(p["hb_per_s"] for p in per_round),
                "ratio": statistics.median(p["ratio"] for p in per_round),
                "ratios": [p["ratio"] for p in per_round],
                "redis_us_per_hb": statistics.median(p["redis_us"] for p in per_round),
                "redis_ratio": statistics.median(p["redis_ratio"] for p in per_round),
                "client_cpu_us_per_hb": sum(r["client_cpu_us"] for r in rounds) / beats,
                "machine_busy": statistics.median(r["machine_busy"] for r in rounds),
                "per_master": per_master,
                "hb_share_max_min": max(hb_shares) / min(hb_shares) if min(hb_shares) else float("inf"),
                "cpu_share_max_min": max(cpu_shares) / min(cpu_shares) if min(cpu_shares) else float("inf"),
                # The Redis side's ceiling: the heartbeats/s at which the busiest master's one core
                # is full, at the CPU per heartbeat and the shares measured.
                "hb_per_s_at_busiest_core_full": beats * 1e6 / busiest_cpu,
                "heartbeats": beats,
                **{k: v for k, v in config.results.items() if k != "rounds"},
            }
        for figures in out.values():
            figures["ceiling_ratio"] = (
                figures["hb_per_s_at_busiest_core_full"] / out[base.key]["hb_per_s_at_busiest_core_full"]
            )
        for config in self.configs[1:]:
            if config.masters > 1:
                self.checks[f"{config.key}: every master took heartbeats"] = all(
                    m["hb_share"] > 0 for m in out[config.key]["per_master"]
                )
        return out

    def report(self, figures: dict, elapsed: float) -> None:
        args = self.args
        base = figures[self.configs[0].key]
        loads = ", ".join(f"{a:.1f}" for a, _, _ in self.loads)
        print()
        print(
            f"cluster scaling: {args.users:,} users (one device each) per configuration, {args.clients} client "
            f"processes, {args.rounds} round(s) of {args.duration:g} s; Redis {base['redis_version']}, "
            f"{os.cpu_count()} cores; load average (1 min) over the run: {loads}"
        )
        print("clusters without replicas; each configuration's Redis servers of its own, on loopback")
        print()
        print("Steady heartbeats (median over the rounds; x (a): the median of each round's ratio to its own (a))")
        print(
            "| configuration | heartbeats/s | x (a) | Redis CPU µs/hb, all masters | x (a) | client CPU µs/hb "
            "| machine busy | hb/s at the busiest master's core full | x (a) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for f in figures.values():
            print(
                f"| {f['label']} | {f['hb_per_s']:,.0f} | {f['ratio']:.2f} | {f['redis_us_per_hb']:.1f} "
                f"| {f['redis_ratio']:.2f} | {f['client_cpu_us_per_hb']:.0f} | {f['machine_busy']:.0%} "
                f"| {f['hb_per_s_at_busiest_core_full']:,.0f} | {f['ceiling_ratio']:.2f} |"
            )
        if args.rounds > 1:
            for f in figures.values():
                print(f"  {f['label']}: x (a) per round {', '.join(f'{r:.2f}' for r in f['ratios'])}")
        print()
        print("Per master (all rounds together)")
        print(
            "| configuration | master | shards of 64 | share of heartbeats | share of Redis CPU | Redis CPU µs/hb "
            "| of it in the script | cores busy | idle µs/s |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for f in figures.values():
            for m in f["per_master"]:
                print(
                    f"| {f['label']} | {m['address']} | {m['shards']} | {m['hb_share']:.1%} | {m['cpu_share']:.1%} "
                    f"| {m['redis_us_per_hb']:.1f} | {m['script_us_per_hb']:.1f} | {m['cores']:.2f} "
                    f"| {m['idle_us_per_s']:.0f} |"
                )
            if f["masters"] > 1:
                print(
                    f"  {f['label']}: max/min share of heartbeats {f['hb_share_max_min']:.2f}, "
                    f"of Redis CPU {f['cpu_share_max_min']:.2f}"
                )
        if not args.no_passes:
            print()
            print(
                f"Passes over the 64 shards (wall ms and Redis CPU µs per pass, all masters; round trips per pass; "
                f"empty ones averaged over {EMPTY_PASSES})"
            )
            print(
                "| configuration | pass | wall ms | Redis CPU µs | round trips | Redis commands "
                "| of them COMMAND GETKEYS | client CPU ms |"
            )
            print("|---|---|---:|---:|---:|---:|---:|---:|")
            names = {
                "sweep_empty": "sweep, nobody due",
                "sweep_all_due": f"sweep, all {args.users:,} users due",
                "persist_empty": "write-behind, nothing to write",
                "persist_all": f"write-behind of {args.users:,} changed users",
            }
            for f in figures.values():
                for key, name in names.items():
                    p = f[key]
                    print(
                        f"| {f['label']} | {name} | {p['wall_ms']:.2f} | {p['redis_cpu_us']:,.0f} "
                        f"| {p['round_trips']:.1f} | {p['redis_commands']:,.0f} | {p['getkeys']:,.0f} "
                        f"| {p['client_cpu_ms']:.2f} |"
                    )
        print()
        primed = ", ".join(f"{f['label']} {f['prime_s']:.1f} s" for f in figures.values())
        print(f"priming (register_device + ingest_signals + persist_pending): {primed}")
        print(f"wall time of the run: {elapsed:.0f} s")
        print(
            f"note: the {args.clients} client processes and every master share this machine's {os.cpu_count()} "
            "cores (and with whatever else runs on it): the total heartbeats/s cannot grow with masters here. "
            "Each master's share and its CPU per heartbeat are what carry to a machine with a core per master; "
            "a master's CPU per heartbeat falls as it gets busier (more commands per wake-up), so the ceilings "
            "projected from lightly loaded masters are low rather than high."
        )
        for name, ok in self.checks.items():
            if not ok:
                print(f"FAILED: {name}")
        print(f"verification: {'OK' if all(self.checks.values()) else 'FAILED'} ({len(self.checks)} checks)")


def pass_figures(reply: dict, masters: list[dict], repeat: int) -> dict:
    return {
        "wall_ms": reply["wall_s"] * 1e3 / repeat,
        "client_cpu_ms": reply["client_cpu_s"] * 1e3 / repeat,
        "round_trips": reply["round_trips"] / repeat,
        "redis_cpu_us": sum(m["cpu_us"] for m in masters) / repeat,
        "redis_commands": sum(m["commands"] for m in masters) / repeat,
        "getkeys": sum(m["getkeys"] for m in masters) / repeat,
    }


if __name__ == "__main__":
    raise SystemExit(main())
