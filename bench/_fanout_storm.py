"""The reconnect storm of bench/fanout.py (`--storm`): every member of a large organization
connecting at once to several live server processes, as after a deploy, while colleagues change.

The clients are `--client-processes` processes of their own (one asyncio loop each, a share of the
sockets, each socket to server `index % servers`); this process drives them over their stdin and
stdout, one JSON line a step, makes the changes through the REST API and reads the servers' CPU
time and memory. All of them time with `time.perf_counter()`, the machine's one monotonic clock.

1. Storm: every client opens all its sockets at once (at most `--connect-concurrency` handshakes
   under way per client process; a refused or timed-out one is tried again, counted) and reads
   each socket's snapshot to its last page. Meanwhile, every `--storm-change-every` seconds, one of
   `--storm-changers` users changes state (a device's visibility, in turn). Timed: from the storm's
   start to the last socket holding its full snapshot.
2. Check: once quiet, every socket must know each changer's final state, from its snapshot and
   the deltas that followed it. Every socket's pages are checked for their numbering; one in
   `--full-check-every` is parsed whole (everyone but itself, once).
3. Fan-out: `--events` changes of one user, each sent once every socket got the one before (plus
   `--spacing`): from just before the POST to each socket's receipt of the delta.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _stack
from _fanout_stack import (
    DB_NAME,
    REDIS_DB,
    Servers,
    cpu_seconds,
    create_organization,
    post_json,
    rss_mib,
    visibility_change,
)

TARGET_STORM_S = 30.0


# --- the driver, in the benchmark's own process ----------------------------------------------------


class Driver:
    """The client processes, one line at a time each."""

    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self.procs = procs

    async def read(self, proc) -> dict:
        line = await proc.stdout.readline()
        if not line:
            raise SystemExit(f"a client process ended early (exit {await proc.wait()})")
        return json.loads(line)

    async def each(self, command: dict | None) -> list[dict]:
        if command is not None:
            for proc in self.procs:
                proc.stdin.write((json.dumps(command) + "\n").encode())
                await proc.stdin.drain()
        return await asyncio.gather(*(self.read(proc) for proc in self.procs))


async def run_storm(plan: dict, client_command: list[str], servers: Servers) -> dict:
    procs = [
        await asyncio.create_subprocess_exec(
            *client_command, str(part), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**26
        )
        for part in range(plan["client_processes"])
    ]
    driver = Driver(procs)
    try:
        return await drive(driver, plan, servers)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def drive(driver: Driver, plan: dict, servers: Servers) -> dict:
    await driver.each(None)  # every client process is up
    await driver.each({"step": "warm"})
    await asyncio.sleep(1.0)  # the warming sockets gone, and what they held
    pids = servers.asgi_pids
    rss_before = [rss_mib(pid) for pid in pids]
    cpu_before = [cpu_seconds(pid) for pid in pids]

    # 1. The storm, and changes made during it.
    storm = asyncio.ensure_future(driver.each({"step": "storm"}))
    expected, storm_changes = await change_during(storm, plan)
    reports = await storm
    storm_cpu = sum(cpu_seconds(pid) for pid in pids) - sum(cpu_before)
    storm_over = time.perf_counter()

    # 2. Every socket comes to know every changer's final state: at once when the servers kept up,
    # once they caught up with the changes waiting for each socket when they did not.
    while True:
        await asyncio.sleep(1.0)
        checks = await driver.each({"step": "verify", "expected": expected})
        caught_up = time.perf_counter() - storm_over
        if not sum(check["wrong"] for check in checks) or caught_up > plan["settle_timeout"]:
            break
    rss_idle = [rss_mib(pid) for pid in pids]

    # 3. Fan-out of single changes to every socket.
    rest_port, token = plan["rest_port"], plan["tokens"][0]
    path = f"/api/v1/devices/{plan['changer_devices'][0]}/signals"
    first = plan["changes_made"][0]  # the first changer's changes so far
    starts, missing = [], 0
    cpu_events_before = sum(cpu_seconds(pid) for pid in pids)
    for n in range(plan["events"]):
        body, status = visibility_change(first + n)
        await driver.each({"step": "expect", "n": n, "status": status, "timeout": plan["event_timeout"]})
        starts.append(time.perf_counter())
        if (answer := await post_json(rest_port, path, token, body)) != 202:
            raise SystemExit(f"the change answered {answer}")
        missing += sum(got["missing"] for got in await driver.each(None))
        await asyncio.sleep(plan["spacing"])
    events_cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_events_before
    reports_after = await driver.each({"step": "report"})
    for proc in driver.procs:
        proc.stdin.write(b'{"step": "close"}\n')
    await asyncio.gather(*(proc.wait() for proc in driver.procs))

    started = min(report["started"] for report in reports)
    ready = sorted(t - started for report in reports for t in report["ready"])
    events = [
        sorted(t - starts[n] for report in reports_after for t in report["arrivals"].get(str(n), []))
        for n in range(plan["events"])
    ]
    sockets = sum(report["connected"] for report in reports)
    deliveries = sum(len(event) for event in events)
    return {
        "sockets": sockets,
        "storm_s": ready[-1] if ready else float("nan"),
        "storm_ready": ready,
        "storm_changes": storm_changes,
        "retries": sum(report["retries"] for report in reports),
        "failed": sockets_wanted(plan) - sum(report["connected"] for report in reports),
        "failures": [f for report in reports for f in report["failures"]],
        "wrong_pages": sum(report["wrong_pages"] for report in reports),
        "full_checks": sum(report["full_checks"] for report in reports),
        "bad_snapshots": sum(report["bad_snapshots"] for report in reports),
        "snapshot_bytes": sum(report["bytes"] for report in reports),
        "storm_cpu_s": storm_cpu,
        "wrong_final": sum(check["wrong"] for check in checks),
        "caught_up_s": caught_up,
        "wrong_examples": [e for check in checks for e in check["examples"]],
        "checked": sum(check["checked"] for check in checks),
        "rss_before_mib": rss_before,
        "rss_idle_mib": rss_idle,
        "events": events,
        "missing": missing,
        "stray": sum(report["stray"] for report in reports_after),
        "closed_early": [code for report in reports_after for code in report["closed"]],
        "events_cpu_s": events_cpu,
        "deliveries": deliveries,
    }


def sockets_wanted(plan: dict) -> int:
    return len(plan["tokens"])


async def change_during(storm: asyncio.Future, plan: dict) -> tuple[dict[str, str], int]:
    """Changes of the changers, one every `storm_change_every` seconds in turn, until the storm is
    over; the state each changer was left in."""
    changers = plan["user_ids"][: plan["storm_changers"]]
    made = [0] * len(changers)
    expected = {}
    count = 0
    while not storm.done():
        k = count % len(changers)
        body, status = visibility_change(made[k])
        path = f"/api/v1/devices/{plan['changer_devices'][k]}/signals"
        if (answer := await post_json(plan["rest_port"], path, plan["tokens"][k], body)) != 202:
            raise SystemExit(f"a change during the storm answered {answer}")
        made[k] += 1
        expected[changers[k]] = status
        count += 1
        await asyncio.wait([storm], timeout=plan["storm_change_every"])
    plan["changes_made"] = made
    return expected, count


# --- the case, from setup to report ----------------------------------------------------------------


def main(args: argparse.Namespace, script: Path) -> int:
    print(
        f"reconnect storm: {args.peers} peers of one organization at once over {args.asgi_processes} live "
        f"processes ({args.asgi_server}), {args.client_processes} client processes (at most "
        f"{args.connect_concurrency} handshakes under way each), {args.storm_changers} users changing every "
        f"{args.storm_change_every} s meanwhile; then {args.events} changes {args.spacing} s apart; "
        f"servers on core {args.server_cpu or '-'}, clients on core {args.load_cpu or '-'}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="sparks-bench-storm-"))
    servers = Servers(args, workdir, args.asgi_processes)
    try:
        setup_started = time.perf_counter()
        plan = create_organization(args.peers, args.storm_changers)
        print(f"setup: {args.peers} users, memberships and tokens in {time.perf_counter() - setup_started:.1f} s")
        servers.start()
        plan.update(
            ws_ports=servers.ws_ports,
            rest_port=args.port,
            events=args.events,
            spacing=args.spacing,
            connect_concurrency=args.connect_concurrency,
            client_processes=args.client_processes,
            storm_changers=args.storm_changers,
            storm_change_every=args.storm_change_every,
            full_check_every=args.full_check_every,
            storm_timeout=args.storm_timeout,
            event_timeout=10.0,
            settle_timeout=60.0,
        )
        plan_file = workdir / "plan.json"
        plan_file.write_text(json.dumps(plan))
        pin = ["taskset", "-c", args.load_cpu] if args.load_cpu else []
        client = [*pin, sys.executable, str(script), "--as-storm-client", str(plan_file)]
        result = asyncio.run(run_storm(plan, client, servers))
        if result["missing"] or result["failed"] or result["wrong_final"]:
            servers.print_logs()
    finally:
        servers.stop()
        _stack.close_django()
        _stack.drop_database(DB_NAME)
        _stack.flush_redis(REDIS_DB)
        shutil.rmtree(workdir, ignore_errors=True)
    figures = report(args, result)
    if args.json:
        print(json.dumps({"benchmark": "fanout-storm", **figures}))
    lost = result["missing"] or result["wrong_final"] or result["wrong_pages"] or result["bad_snapshots"]
    return 1 if lost or result["failed"] else 0


def report(args: argparse.Namespace, result: dict) -> dict:
    sockets, ready = result["sockets"], result["storm_ready"]
    if result["failed"]:
        result["storm_s"] = float("inf")  # not every socket got there
    deliveries = [seconds * 1e3 for event in result["events"] for seconds in event]
    last = [event[-1] * 1e3 for event in result["events"] if event]
    per_server = sockets / args.asgi_processes
    rss_growth = [idle - before for before, idle in zip(result["rss_before_mib"], result["rss_idle_mib"], strict=True)]
    figures = {
        "peers": args.peers,
        "sockets": sockets,
        "storm_s": result["storm_s"],
        "storm_p50_s": _stack.percentile(ready, 50),
        "storm_p99_s": _stack.percentile(ready, 99),
        "storm_changes": result["storm_changes"],
        "retries": result["retries"],
        "failed": result["failed"],
        "snapshot_gib": result["snapshot_bytes"] / 2**30,
        "storm_server_cpu_ms_per_socket": result["storm_cpu_s"] / max(sockets, 1) * 1e3,
        "wrong_final": result["wrong_final"],
        "checked": result["checked"],
        "full_checks": result["full_checks"],
        "rss_mib_per_1000_sockets": sum(rss_growth) / args.asgi_processes / per_server * 1000 if sockets else None,
        "rss_idle_mib": result["rss_idle_mib"],
        "deliveries": len(deliveries),
        "missing": result["missing"],
        "stray": result["stray"],
        "p50_ms": _stack.percentile(deliveries, 50),
        "p99_ms": _stack.percentile(deliveries, 99),
        "last_peer_p50_ms": _stack.median(last),
        "last_peer_p99_ms": _stack.percentile(last, 99),
        "server_cpu_us_per_delivery": result["events_cpu_s"] / max(len(deliveries), 1) * 1e6,
    }
    print(
        f"\nstorm: {sockets} of {args.peers} sockets held their full snapshot after {figures['storm_s']:.1f} s "
        f"(half of them after {figures['storm_p50_s']:.1f} s, 99% after {figures['storm_p99_s']:.1f} s); "
        f"{figures['snapshot_gib']:.1f} GiB of snapshot pages; {result['retries']} handshakes tried again, "
        f"{result['failed']} sockets never connected"
    )
    for failure in result["failures"]:
        print(f"  {failure}")
    print(
        f"server CPU during the storm: {figures['storm_server_cpu_ms_per_socket']:.2f} ms per socket "
        f"(both processes; {result['storm_changes']} changes made meanwhile)"
    )
    print(
        f"final state of the {args.storm_changers} changers, {result['caught_up_s']:.0f} s after the storm: "
        f"{figures['wrong_final']} wrong in {figures['checked']} "
        f"sockets; {figures['full_checks']} snapshots parsed whole ({result['bad_snapshots']} wrong), "
        f"{result['wrong_pages']} pages out of order"
    )
    for example in result["wrong_examples"]:
        print(f"  socket {example[0]}: {example[1]} is {example[2]}, expected {example[3]}")
    idle = ", ".join(f"{mib:.0f}" for mib in result["rss_idle_mib"])
    print(
        f"server memory: {figures['rss_mib_per_1000_sockets']:.1f} MiB more RSS per 1,000 idle sockets "
        f"(RSS now {idle} MiB)"
    )
    print(f"\n{'figure':52} {'ms':>9}")
    rows = [
        ("delivery p50 (all socket x change deliveries)", "p50_ms"),
        ("delivery p99", "p99_ms"),
        ("last socket of a change, median", "last_peer_p50_ms"),
        ("last socket of a change, p99", "last_peer_p99_ms"),
        ("server CPU per delivered message (µs)", "server_cpu_us_per_delivery"),
    ]
    for label, key in rows:
        print(f"{label:52} {figures[key]:9.1f}")
    print(
        f"\n{figures['deliveries']} deliveries, {figures['missing']} missing (not within 10 s), "
        f"{figures['stray']} repeated or unexpected"
    )
    if result["closed_early"]:
        print(f"{len(result['closed_early'])} sockets closed by the server, codes {set(result['closed_early'])}")
    met = figures["storm_s"] < TARGET_STORM_S and not (result["wrong_final"] or result["bad_snapshots"])
    print(f"target storm < {TARGET_STORM_S:.0f} s with nothing lost: {'met' if met else 'MISSED'}")
    return figures
