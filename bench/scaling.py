"""Scaling with web processes: REST heartbeat throughput and p99 of the production web server with
1, 2 and 4 processes, side by side in one run, as ratios to one process, and where the curve bends.

    python bench/scaling.py                    # 1, 2 and 4 processes, 5 rounds of 10 s each (~3 min)
    python bench/scaling.py --quick            # 20 users, 1 round of 2 s (a smoke run)
    python bench/scaling.py --processes 1,2,3,4,6,8 --server-cpu 0-3 --load-cpu 4   # a bigger machine

The servers: one production web server per process count (`deploy/processes.py`'s `web_command`,
granian WSGI with the heartbeat lane, its `workers` set to 1, 2, 4), each on a free port of its
own, all running for the whole benchmark (an idle one costs nothing measurable), and one Celery
worker with beat (the expiry sweep and the writes behind run during the measurement). They share
the cores of `--server-cpu` (`taskset`; default core 0, as the other benchmarks); the load
generator, `wrk -t1` with `bench/heartbeat_ingest.py`'s script, on `--load-cpu` (default core 1).
PostgreSQL and Redis are the machine's, not pinned, with a database (`sparks_presence_bench_scaling`)
and a Redis db (4) of this benchmark's own, created and dropped, flushed.

The load: `--users` users with one device each, its hot state primed by one heartbeat; steady
heartbeats (`POST /api/v1/devices/{id}/signals`, one heartbeat with a seq increasing per device:
the WSGI lane's one Lua step), `--connections` in flight (a closed loop: the latency is the
server's answer time under that concurrency). Rate limits are checked on every request, never
reached. With fewer users than connections, two requests of one device may be in flight at once and
the later seq overtake the earlier (answered 202, ignored): `--users` must be more than `--connections`.
After a short untimed warm-up of each server (every process has served, every token is in its
cache), each round measures every process count in turn, a few seconds apart, starting one count
further on each round: a round's ratio to its own one-process run is what is reported as "x 1"
(the median over the rounds; the machine's speed drifts, a pair measured seconds apart does not).

Printed per process count: req/s, the ratio to one process and per process, p50 and p99 with p99's
ratio to one process, the servers' cores' busy share (everything on those cores, the benchmark's
own processes included) and the web server's CPU per request. The curve bends at the first step
whose gain falls under `--bend` (default 10%): past it, another process buys little or nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack
import heartbeat_ingest  # the wrk script and runner: the same load as section 3 of BENCHMARKS.md

sys.path.insert(0, str(_stack.ROOT))
from deploy import processes  # what `make serve-prod` runs

DB_NAME = "sparks_presence_bench_scaling"
REDIS_DB = 4
VENV_BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port nothing listens on now: another benchmark on the machine may hold the usual ones."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_list(spec: str) -> list[int]:
    """The cores of a taskset list ("0", "0-3", "0,2")."""
    cores: list[int] = []
    for part in filter(None, spec.split(",")):
        low, _, high = part.partition("-")
        cores.extend(range(int(low), int(high or low) + 1))
    return cores


def core_jiffies() -> list[tuple[int, int]]:
    """(busy, total) jiffies per core, from /proc/stat."""
    found = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                values = [int(v) for v in line.split()[1:]]
                idle = values[3] + values[4]
                found.append((sum(values) - idle, sum(values)))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) so far of process `pid` and its descendants (granian's workers)."""
    parents, seconds = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            parents[int(entry)] = int(fields[1])
            seconds[int(entry)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    tree, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(seconds.get(member, 0.0) for member in tree)


class Stack:
    """The benchmark's servers: a web server per process count, a Celery worker with beat."""

    def __init__(self, args, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.env = {**os.environ, **_stack.server_environment(DB_NAME, REDIS_DB)}
        self.pin = ["taskset", "-c", args.server_cpu] if args.server_cpu else []
        self.procs: list[subprocess.Popen] = []
        self.web: dict[int, tuple[str, subprocess.Popen]] = {}  # processes -> (base URL, server)
        self.users: list[tuple[str, str]] = []  # (token, device id)

    def seed(self) -> None:
        """The organization, its users with tokens and one signed-in device each (Django is set up
        on the benchmark's database by `_stack.run_on_own_data`)."""
        from rest_framework.authtoken.models import Token

        from orgs.models import Membership, Organization, User
        from presence import services

        organization = Organization.objects.create(slug="scaling", name="Scaling")
        for i in range(self.args.users):
            user = User.objects.create(username=f"scaling{i:03d}", password="!")
            Membership.objects.create(user=user, organization=organization)
            token = Token.objects.create(user=user)
            device, _ = services.register_device(user, f"installation-{i:03d}", "bench laptop")
            self.users.append((token.key, device.device_id))
        _stack.close_django()

    def _start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115  (closed with the process)
        process = subprocess.Popen([*self.pin, *command], cwd=_stack.ROOT, env=self.env, stdout=log, stderr=log)
        self.procs.append(process)
        return process

    def start(self) -> None:
        for count in self.args.processes:
            port = free_port()
            server = self._start(f"web-{count}", processes.web_command(VENV_BIN, "127.0.0.1", port, workers=count))
            self.web[count] = (f"http://127.0.0.1:{port}", server)
        self._start(
            "worker",
            [
                str(VENV_BIN / "celery"), "-A", "sparks_site", "worker", "--beat", "--pool", "solo",
                "--loglevel", "WARNING", "--schedule", str(self.workdir / "beat-schedule"),
            ],
        )  # fmt: skip
        for base, _ in self.web.values():
            _stack.wait_http(base + "/api/v1/config", timeout=90)

    def prime(self) -> None:
        """One heartbeat per device: the hot state every steady heartbeat of the runs finds."""
        base = next(iter(self.web.values()))[0]
        seq = heartbeat_ingest.seq_base()
        for token, device_id in self.users:
            status, body = heartbeat_ingest.http(
                "POST",
                f"{base}/api/v1/devices/{device_id}/signals",
                {"signals": [{"type": "heartbeat", "seq": seq}]},
                {"Authorization": f"Token {token}"},
            )
            if status != 202:
                raise SystemExit(f"priming heartbeat answered {status}: {body}")

    def users_file(self) -> Path:
        path = self.workdir / "users.txt"
        path.write_text("".join(f"{t} {d} /api/v1/devices/{d}/signals\n" for t, d in self.users))
        return path

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.workdir.glob("*.log")))

    def stop(self) -> None:
        _stack.stop_processes(self.procs)


def measure(args, stack: Stack, count: int, users_file: Path, script: Path) -> dict:
    """One wrk run against the web server of `count` processes, with the CPU it and the cores took."""
    base, server = stack.web[count]
    cores_before, cpu_before, started = core_jiffies(), tree_cpu_seconds(server.pid), time.monotonic()
    result = heartbeat_ingest.run_wrk(args, "ours_steady", base, users_file, script)
    elapsed = time.monotonic() - started
    cores_after, cpu_after = core_jiffies(), tree_cpu_seconds(server.pid)
    busy = [(a[0] - b[0]) / max(1, a[1] - b[1]) for b, a in zip(cores_before, cores_after, strict=True)]
    server_cores = cpu_list(args.server_cpu) or list(range(len(busy)))
    result["servers_cores_busy"] = sum(busy[i] for i in server_cores) / len(server_cores)
    result["cores_busy"] = busy
    result["web_cpu_ms_per_request"] = (cpu_after - cpu_before) * 1000 / max(1, result["requests"])
    result["web_cores_used"] = (cpu_after - cpu_before) / elapsed
    return result


def summarize(runs: dict[int, list[dict]], counts: list[int]) -> dict[int, dict]:
    first = counts[0]
    figures = {}
    for count in counts:
        results = runs[count]
        # Paired: each round's run against the same round's one-process run, seconds apart.
        pairs = [r["rps"] / one["rps"] for r, one in zip(results, runs[first], strict=True)]
        p99_pairs = [r["p99_us"] / one["p99_us"] for r, one in zip(results, runs[first], strict=True)]
        figures[count] = {
            "rps": _stack.median([r["rps"] for r in results]),
            "ratio": _stack.median(pairs),
            "ratio_per_process": _stack.median(pairs) / (count / first),
            "p50_ms": _stack.median([r["p50_us"] / 1e3 for r in results]),
            "p99_ms": _stack.median([r["p99_us"] / 1e3 for r in results]),
            "p99_ratio": _stack.median(p99_pairs),
            "servers_cores_busy": _stack.median([r["servers_cores_busy"] for r in results]),
            "web_cores_used": _stack.median([r["web_cores_used"] for r in results]),
            "web_cpu_ms_per_request": _stack.median([r["web_cpu_ms_per_request"] for r in results]),
            "requests": sum(r["requests"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "runs": [round(r["rps"]) for r in results],
            "pairs": [round(p, 2) for p in pairs],
        }
    return figures


def bend(figures: dict[int, dict], counts: list[int], threshold: float) -> tuple[int | None, list[str]]:
    """The process count after which the next step gains less than `threshold`, and every step."""
    steps, bent_at = [], None
    for before, after in itertools.pairwise(counts):
        gain = figures[after]["ratio"] / figures[before]["ratio"]
        steps.append(f"{before} → {after}: x{gain:.2f}")
        if bent_at is None and gain < 1 + threshold:
            bent_at = before
    return bent_at, steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2,4", help="web process counts, the first the baseline (1,2,4)")
    parser.add_argument("--runs", type=int, default=5, help="rounds; the median is reported (default 5)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--users", type=int, default=50, help="users, one device each (default 50)")
    parser.add_argument("--warm-up", type=int, default=3, help="seconds of untimed load per server first (3)")
    parser.add_argument("--bend", type=float, default=0.10, help="a step gaining less than this bends (0.10)")
    parser.add_argument("--server-cpu", default="0", help="cores for the servers ('' for no pinning)")
    parser.add_argument("--load-cpu", default="1", help="core for wrk ('' for no pinning)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 users, 1 round of 2 s")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    args.processes = sorted({int(n) for n in args.processes.split(",") if n.strip()})
    if args.quick:
        args.users, args.runs, args.duration, args.warm_up = 20, 1, 2, 1
    if not args.processes or args.processes[0] < 1:
        raise SystemExit("--processes names no process count")
    if args.users <= args.connections:
        raise SystemExit("--users must be more than --connections: one request in flight per device")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    if (args.server_cpu or args.load_cpu) and shutil.which("taskset") is None:
        raise SystemExit("taskset is needed (util-linux), or pass --server-cpu '' --load-cpu ''")
    # Pub/sub channels are not per Redis db: a prefix of its own keeps this benchmark's announcements
    # from another benchmark's listeners on the same Redis server.
    os.environ.setdefault("BENCH_CHANNEL_PREFIX", "sparksbench-scaling")

    counts = args.processes
    print(
        f"scaling: REST steady heartbeats, {args.users} users, {args.connections} connections, "
        f"{args.runs} x {args.duration} s per process count {counts}; servers on cores {args.server_cpu or '-'} "
        f"(web: deploy/processes.py web_command; Celery worker + beat), wrk on core {args.load_cpu or '-'}; "
        f"{os.cpu_count()} cores on the machine"
    )
    workdir = Path(tempfile.mkdtemp(prefix="sparks-bench-scaling-"))
    script = workdir / "load.lua"
    script.write_text(heartbeat_ingest.WRK_SCRIPT)
    stack = Stack(args, workdir)
    runs: dict[int, list[dict]] = {count: [] for count in counts}

    def run() -> int:
        # The servers stop before the benchmark's database is dropped and its Redis db flushed
        # (`run_on_own_data`): still running, the worker and beat would write to them again.
        try:
            return measure_all()
        finally:
            stack.stop()

    def measure_all() -> int:
        started = time.monotonic()
        stack.seed()
        stack.start()
        stack.prime()
        users_file = stack.users_file()
        print(f"set up and servers up in {time.monotonic() - started:.1f} s", flush=True)
        # A fresh process's first seconds are slower (imports on first use, caches filling): each
        # server gets untimed load first, long enough for every one of its processes to serve.
        warm_up = argparse.Namespace(**{**vars(args), "duration": args.warm_up})
        for count in counts:
            heartbeat_ingest.run_wrk(warm_up, "ours_steady", stack.web[count][0], users_file, script)
        for round_number in range(args.runs):
            # Each round starts one count further on: no count always runs first, or last.
            shift = round_number % len(counts)
            for count in counts[shift:] + counts[:shift]:
                result = measure(args, stack, count, users_file, script)
                runs[count].append(result)
                print(f"  {count} web processes: {result['rps']:8.0f}/s", file=sys.stderr, flush=True)
        return 0

    try:
        _stack.run_on_own_data(DB_NAME, REDIS_DB, run)
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    figures = summarize(runs, counts)
    print(
        f"\n{'web processes':>13} {'req/s':>8} {'x ' + str(counts[0]):>6} {'per proc':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'p99 x':>6} {'cores busy':>10} {'web CPU':>8} {'ms/req':>7} {'errors':>6}  runs (req/s); pairs"
    )
    for count in counts:
        f = figures[count]
        print(
            f"{count:13d} {f['rps']:8.0f} {f['ratio']:6.2f} {f['ratio_per_process']:8.2f} {f['p50_ms']:7.2f} "
            f"{f['p99_ms']:7.2f} {f['p99_ratio']:6.2f} {f['servers_cores_busy']:10.0%} {f['web_cores_used']:8.2f} "
            f"{f['web_cpu_ms_per_request']:7.3f} {f['errors']:6d}  {f['runs']}; {f['pairs']}"
        )
    print(
        f"(cores busy: the servers' cores {args.server_cpu or 'all'}, everything on them; web CPU: the web "
        "server's processes, in cores; x and p99 x: the median of each round's ratio to its own first run)"
    )
    bent_at, steps = bend(figures, counts, args.bend)
    if len(counts) > 1:
        steps_text = "; ".join(steps)
        if bent_at is not None:
            after = counts[counts.index(bent_at) + 1]
            print(
                f"the curve bends after {bent_at} web process{'es' if bent_at > 1 else ''}: "
                f"{bent_at} → {after} gains under {args.bend:.0%} ({steps_text})"
            )
        else:
            print(
                f"the curve does not bend within {counts[-1]} web processes: every step gains "
                f"{args.bend:.0%} or more ({steps_text})"
            )
    if args.json:
        print(json.dumps({"benchmark": "scaling", "bends_after": bent_at, "results": figures}))
    failed = sum(f["errors"] for f in figures.values())
    if failed:
        print(f"\n{failed} requests failed (non-2xx or socket errors): the figures are suspect")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
