"""Fan-out of a presence change to an organization's connected websockets, and the reconnect storm.

    python bench/fanout.py                  # 1,000 peers, 30 changes 0.5 s apart
    python bench/fanout.py --quick          # 20 peers, 10 changes (a smoke run)
    python bench/fanout.py --storm          # 10,000 peers reconnecting at once to 2 live processes
    python bench/fanout.py --storm --quick  # the same with 200 peers (a smoke run)

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

`--storm` (bench/_fanout_storm.py): `--peers` (10,000) members connect at once, split over
`--asgi-processes` (2) live processes and `--client-processes` (2) client processes, while some
of them change state; timed until the last socket holds its full snapshot (target < 30 s), then
every socket's final state of the changers is checked, and `--events` changes fanned out as
above. Nothing is pinned by default in this case: two servers and two clients share the 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _fanout_stack
import _fanout_storm
import _fanout_storm_clients
import _stack
from _fanout_stack import DB_NAME, REDIS_DB, Servers, cpu_seconds, post_json

TARGET_P99_MS = 200.0


# --- the clients (run on their own core, in a process of their own) -------------------------


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


def client_main(plan_file: str) -> None:
    plan = json.loads(Path(plan_file).read_text())
    print("BENCHJSON " + json.dumps(asyncio.run(run_clients(plan))))


# --- main -----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, help="connected users of the organization (default 1000; storm 10000)")
    parser.add_argument("--events", type=int, default=30, help="changes to fan out (default 30)")
    parser.add_argument("--spacing", type=float, default=0.5, help="seconds between changes (default 0.5)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for the REST change (default 2)")
    parser.add_argument(
        "--asgi-server",
        choices=_stack.ASGI_SERVERS,
        default="prod",
        help="websocket server (default prod: deploy/processes.py's live process)",
    )
    parser.add_argument(
        "--connect-concurrency",
        type=int,
        help="sockets connecting at once (default 20; storm: per client process, 500)",
    )
    parser.add_argument("--port", type=int, default=18100)
    parser.add_argument(
        "--ws-port", type=int, default=18101, help="the first live process's port (the next ones follow)"
    )
    parser.add_argument("--server-cpu", help="core for the servers ('' for no pinning; default 0, storm '')")
    parser.add_argument("--load-cpu", help="core for the clients ('' for no pinning; default 1, storm '')")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 peers, 10 changes (storm: 200 peers)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    storm = parser.add_argument_group("the reconnect storm")
    storm.add_argument("--storm", action="store_true", help="every peer connecting at once (bench/_fanout_storm.py)")
    storm.add_argument("--asgi-processes", type=int, default=2, help="live server processes (default 2)")
    storm.add_argument("--client-processes", type=int, default=2, help="client processes (default 2)")
    storm.add_argument("--storm-changers", type=int, default=20, help="users changing during the storm (default 20)")
    storm.add_argument(
        "--storm-change-every", type=float, help="seconds between their changes (default 1; --quick 0.02)"
    )
    storm.add_argument("--storm-timeout", type=float, default=600.0, help="give up connecting after so long (600 s)")
    storm.add_argument("--full-check-every", type=int, default=100, help="parse one socket's snapshot whole in so many")
    parser.add_argument("--as-client", help=argparse.SUPPRESS)  # internal: run the clients from a plan file
    parser.add_argument("--as-storm-client", nargs=2, help=argparse.SUPPRESS)  # internal: plan file, part
    args = parser.parse_args()
    storm_defaults = {
        "peers": 200 if args.quick else 10_000,
        "storm_change_every": 0.02 if args.quick else 1.0,
        "connect_concurrency": 500,
        "server_cpu": "",
        "load_cpu": "",
    }
    defaults = storm_defaults if args.storm else {"peers": 20 if args.quick else 1000, "connect_concurrency": 20}
    defaults = {"server_cpu": "0", "load_cpu": "1"} | defaults
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.quick:
        args.events = 10
    return args


def main() -> int:
    args = parse_args()
    if args.as_client:
        client_main(args.as_client)
        return 0
    if args.as_storm_client:
        with contextlib.suppress(ImportError):  # a client process keeps up with more sockets on uvloop
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        plan = json.loads(Path(args.as_storm_client[0]).read_text())
        asyncio.run(_fanout_storm_clients.client_main(plan, int(args.as_storm_client[1])))
        return 0
    if (args.server_cpu or args.load_cpu) and shutil.which("taskset") is None:
        raise SystemExit("taskset is needed (util-linux), or pass --server-cpu '' --load-cpu ''")
    if args.storm:
        return _fanout_storm.main(args, Path(__file__).resolve())

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
        plan = _fanout_stack.create_organization(args.peers)
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
            servers.print_logs()
            raise SystemExit("the clients failed")
        result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("BENCHJSON "))[10:])
        if result["missing"]:
            servers.print_logs()
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
