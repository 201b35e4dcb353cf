"""Fan-out of a presence change to an organization's connected websockets.

    python bench/fanout.py              # 1,000 peers, 30 changes 0.5 s apart
    python bench/fanout.py --quick      # 20 peers, 10 changes (a smoke run)

One organization of `--peers` users (bulk-created, each with a DRF token), every one of them
connected to `/ws/presence/` (production's live process by default, as `deploy/processes.py`
starts it) with `?token=` and holding its snapshot. Then, `--events` times, one of them changes
state through the REST API (gunicorn sync workers): a `visibility` signal, hidden and visible in turn
(away, available). Measured per change, from just before the POST is sent to each peer's receipt
of the `presence` delta: every (peer, change) delivery, and the last peer of each change.

Layout (2 cores): the websocket server and gunicorn on core 0 (`taskset -c 0`); the clients — every websocket
and the REST caller, one asyncio process, one clock — on core 1. PostgreSQL and Redis are the
machine's, not pinned. Its own database and Redis db, dropped and flushed at the end.

Target: p99 of a delivery < 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack

DB_NAME = "sparks_presence_bench_fanout"
REDIS_DB = 14
VENV_BIN = Path(sys.executable).parent
TARGET_P99_MS = 200.0


# --- setup ----------------------------------------------------------------------------------


def create_organization(peers: int) -> dict:
    """The organization, its users and their tokens; the first user has a device and changes."""
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
    changer = users[0]
    device, _ = services.register_device(changer, "fanout-laptop", "laptop")
    plan = {
        "tokens": [token.key for token in tokens],
        "changer_id": str(changer.public_id),
        "changer_device": device.device_id,
    }
    _stack.close_django()
    return plan


class Servers:
    def __init__(self, args, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.env = {**os.environ, **_stack.server_environment(DB_NAME, REDIS_DB)}
        self.pin = ["taskset", "-c", args.server_cpu] if args.server_cpu else []

    def _start(self, name: str, cmd: list[str], url: str) -> None:
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115  (closed with the process)
        self.procs.append(subprocess.Popen([*self.pin, *cmd], cwd=_stack.ROOT, env=self.env, stdout=log, stderr=log))
        _stack.wait_http(url)

    def start(self) -> None:
        args = self.args
        self._start(
            "daphne",
            _stack.asgi_server_command(args.asgi_server, args.ws_port),
            f"http://127.0.0.1:{args.ws_port}/api/v1/config",
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


# --- the clients (run on their own core, in a process of their own) -------------------------


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


async def run_clients(plan: dict) -> dict:
    import websockets

    tokens, changer_id = plan["tokens"], plan["changer_id"]
    url = f"ws://127.0.0.1:{plan['ws_port']}/ws/presence/"
    # The change being waited for: its expected status, when its POST left, and each peer's receipt.
    current: dict = {"status": None, "t0": 0.0, "received": {}, "done": asyncio.Event()}
    stray = 0
    closed: list[int | None] = []

    async def connect(index: int, limit: asyncio.Semaphore):
        async with limit:
            ws = await websockets.connect(
                f"{url}?token={tokens[index]}", max_size=None, compression=None, open_timeout=60, ping_interval=None
            )
            while True:  # the snapshot, in pages
                page = json.loads(await ws.recv())
                if page["type"] == "snapshot" and page["last"]:
                    return ws

    async def listen(index: int, ws) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await receive_deltas(index, ws)
        closed.append(ws.close_code)  # before the end: the server closed it

    async def receive_deltas(index: int, ws) -> None:
        nonlocal stray
        async for text in ws:
            arrived = time.perf_counter()
            message = json.loads(text)
            if message.get("type") != "presence" or message.get("user_id") != changer_id:
                continue
            if message["status"] != current["status"] or index in current["received"]:
                stray += 1  # a repeat, or a change not waited for
                continue
            current["received"][index] = arrived - current["t0"]
            if len(current["received"]) == len(tokens):
                current["done"].set()

    t0 = time.perf_counter()
    limit = asyncio.Semaphore(plan["connect_concurrency"])
    sockets = await asyncio.gather(*(connect(i, limit) for i in range(len(tokens))))
    connect_seconds = time.perf_counter() - t0
    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(sockets)]
    await asyncio.sleep(1.0)  # let the connection storm's stragglers settle

    events, rest_ms, missing = [], [], 0
    server_cpu_before, client_cpu_before = cpu_seconds(plan["daphne_pid"]), time.process_time()
    path = f"/api/v1/devices/{plan['changer_device']}/signals"
    for n in range(plan["events"]):
        hidden = n % 2 == 0
        current.update(status="away" if hidden else "available", received={}, done=asyncio.Event())
        body = {"signals": [{"type": "visibility", "value": "hidden" if hidden else "visible", "seq": n + 1}]}
        current["t0"] = time.perf_counter()
        status = await post_json(plan["rest_port"], path, tokens[0], body)
        rest_ms.append((time.perf_counter() - current["t0"]) * 1e3)
        if status != 202:
            raise SystemExit(f"the change answered {status}")
        try:
            await asyncio.wait_for(current["done"].wait(), plan["event_timeout"])
        except TimeoutError:
            missing += len(tokens) - len(current["received"])
        events.append(sorted(seconds * 1e3 for seconds in current["received"].values()))
        await asyncio.sleep(plan["spacing"])

    server_cpu = cpu_seconds(plan["daphne_pid"]) - server_cpu_before
    client_cpu = time.process_time() - client_cpu_before
    closed_early = list(closed)
    for task in listeners:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {
        "connect_seconds": connect_seconds,
        "events": events,
        "rest_ms": rest_ms,
        "missing": missing,
        "stray": stray,
        "closed_early": closed_early,
        # CPU over the changes (the spacing included, when nothing else happens).
        "daphne_cpu_ms_per_event": server_cpu / plan["events"] * 1e3,
        "client_cpu_ms_per_event": client_cpu / plan["events"] * 1e3,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/<pid>/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_main(plan_file: str) -> None:
    plan = json.loads(Path(plan_file).read_text())
    print("BENCHJSON " + json.dumps(asyncio.run(run_clients(plan))))


def print_logs(workdir: Path) -> None:
    for name in ("daphne", "gunicorn"):
        tail = (workdir / f"{name}.log").read_text().splitlines(True)[-30:]
        print(f"--- {name}.log (tail)\n" + "".join(tail))


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1000, help="connected users of the organization (default 1000)")
    parser.add_argument("--events", type=int, default=30, help="changes to fan out (default 30)")
    parser.add_argument("--spacing", type=float, default=0.5, help="seconds between changes (default 0.5)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for the REST change (default 2)")
    parser.add_argument(
        "--asgi-server",
        choices=_stack.ASGI_SERVERS,
        default="prod",
        help="websocket server (default prod: deploy/processes.py's live process)",
    )
    parser.add_argument("--connect-concurrency", type=int, default=20, help="sockets connecting at once")
    parser.add_argument("--port", type=int, default=18100)
    parser.add_argument("--ws-port", type=int, default=18101)
    parser.add_argument("--server-cpu", default="0", help="core for the servers ('' for no pinning)")
    parser.add_argument("--load-cpu", default="1", help="core for the clients ('' for no pinning)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 peers, 10 changes")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--as-client", help=argparse.SUPPRESS)  # internal: run the clients from a plan file
    args = parser.parse_args()
    if args.as_client:
        client_main(args.as_client)
        return 0
    if args.quick:
        args.peers, args.events = 20, 10
    if (args.server_cpu or args.load_cpu) and shutil.which("taskset") is None:
        raise SystemExit("taskset is needed (util-linux), or pass --server-cpu '' --load-cpu ''")

    print(
        f"fan-out: {args.peers} peers in one organization, {args.events} changes {args.spacing} s apart, "
        f"servers on core {args.server_cpu or '-'} ({args.asgi_server}; "
        f"gunicorn {args.workers} sync workers for the change), "
        f"clients on core {args.load_cpu or '-'}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="sparks-bench-fanout-"))
    servers = Servers(args, workdir)
    try:
        setup_started = time.perf_counter()
        plan = create_organization(args.peers)
        print(f"setup: {args.peers} users, memberships and tokens in {time.perf_counter() - setup_started:.1f} s")
        servers.start()
        plan.update(
            ws_port=args.ws_port,
            rest_port=args.port,
            events=args.events,
            spacing=args.spacing,
            connect_concurrency=args.connect_concurrency,
            event_timeout=10.0,
            daphne_pid=servers.procs[0].pid,
        )
        plan_file = workdir / "plan.json"
        plan_file.write_text(json.dumps(plan))
        cmd = [
            *(["taskset", "-c", args.load_cpu] if args.load_cpu else []),
            sys.executable,
            str(Path(__file__).resolve()),
            "--as-client",
            str(plan_file),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stdout, out.stderr, sep="\n")
            print_logs(workdir)
            raise SystemExit("the clients failed")
        result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("BENCHJSON "))[10:])
        if result["missing"]:
            print_logs(workdir)
    finally:
        servers.stop()
        _stack.close_django()
        _stack.drop_database(DB_NAME)
        _stack.flush_redis(REDIS_DB)
        shutil.rmtree(workdir, ignore_errors=True)

    deliveries = [ms for event in result["events"] for ms in event]
    last = [event[-1] for event in result["events"] if event]
    first = [event[0] for event in result["events"] if event]
    figures = {
        "peers": args.peers,
        "events": args.events,
        "deliveries": len(deliveries),
        "missing": result["missing"],
        "stray": result["stray"],
        "connect_s": result["connect_seconds"],
        "p50_ms": _stack.percentile(deliveries, 50),
        "p99_ms": _stack.percentile(deliveries, 99),
        "max_ms": max(deliveries, default=float("nan")),
        "first_peer_p50_ms": _stack.median(first),
        "last_peer_p50_ms": _stack.median(last),
        "last_peer_p99_ms": _stack.percentile(last, 99),
        "rest_p50_ms": _stack.median(result["rest_ms"]),
        "daphne_cpu_ms_per_event": result["daphne_cpu_ms_per_event"],
        "client_cpu_ms_per_event": result["client_cpu_ms_per_event"],
    }
    print(f"connected {args.peers} sockets (each with its snapshot) in {figures['connect_s']:.1f} s")
    print(f"\n{'figure':52} {'ms':>9}")
    rows = [
        ("delivery p50 (all peer x change deliveries)", "p50_ms"),
        ("delivery p99", "p99_ms"),
        ("delivery max", "max_ms"),
        ("first peer of a change, median", "first_peer_p50_ms"),
        ("last peer of a change, median", "last_peer_p50_ms"),
        ("last peer of a change, p99", "last_peer_p99_ms"),
        ("the change's REST answer (POST to 202), median", "rest_p50_ms"),
        ("websocket server CPU per change", "daphne_cpu_ms_per_event"),
        ("clients' CPU per change", "client_cpu_ms_per_event"),
    ]
    for label, key in rows:
        print(f"{label:52} {figures[key]:9.1f}")
    print(
        f"\n{figures['deliveries']} deliveries, {figures['missing']} missing (not within 10 s), "
        f"{figures['stray']} repeated or unexpected"
    )
    if result["closed_early"]:
        print(f"{len(result['closed_early'])} sockets closed by the server, codes {set(result['closed_early'])}")
    met = figures["p99_ms"] < TARGET_P99_MS and not figures["missing"]
    print(f"target p99 < {TARGET_P99_MS:.0f} ms: {'met' if met else 'MISSED'}")
    if args.json:
        print(json.dumps({"benchmark": "fanout", **figures}))
    return 1 if figures["missing"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
