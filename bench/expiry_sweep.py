"""One `services.sweep_expired(now)` over 100,000 devices of which 1% went stale.

    python bench/expiry_sweep.py                  # 25,000 users x 4 devices, 1% of users stale
    python bench/expiry_sweep.py --users 100000 --devices-per-user 1
    python bench/expiry_sweep.py --quick          # 500 users x 4 devices (a smoke run)
    python bench/expiry_sweep.py --profile        # the sweep under pyinstrument (pip install pyinstrument)

On PostgreSQL (its own database, `sparks_presence_bench`, created and dropped) and Redis (db 12,
flushed at start and end). The database rows come from `bulk_create`; the hot store is written
directly with one Redis pipeline, using `presence.hot`'s encoders, in the shape
`services.recompute` leaves it: per user the hash (`d:`/`q:` per device, `ctx`, `dec`, `ver`,
`loaded`), the user in its shard's `due` sorted set at its decision's `valid_until`, and every
shard's epoch key (as in a deployment that has been running: without them the sweep takes its
rebuild-after-a-Redis-restart path). Before timing, two sample users (one fresh, one stale) are rebuilt by
`services.recompute` itself and compared field for field with what was written, so the
replica is known to be exact.

"Stale" users had every device's last signal 200 s before the sweep (device timeout 120 s): the
sweep must recompute exactly them (and nobody else) and leave them offline. Fresh users were
seen 10 s before it. Target: the sweep < 1 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack

DB_NAME = "sparks_presence_bench_sweep"
REDIS_DB = 12
TARGET_SECONDS = 1.0
CHUNK = 2000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=25_000)
    parser.add_argument("--devices-per-user", type=int, default=4)
    parser.add_argument("--stale", type=float, default=0.01, help="fraction of users gone stale (default 0.01)")
    parser.add_argument("--orgs", type=int, default=10, help="organizations the users are spread over")
    parser.add_argument("--quick", action="store_true", help="500 users x 4 devices")
    parser.add_argument("--profile", action="store_true", help="run the sweep under pyinstrument and print where")
    parser.add_argument("--keep", action="store_true", help="keep the database and Redis db afterwards")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    if args.quick:
        args.users, args.devices_per_user = 500, 4

    return _stack.run_on_own_data(DB_NAME, REDIS_DB, lambda: run(args), keep=args.keep)


def run(args) -> int:
    from django.db import connection
    from django.utils import timezone

    from orgs.models import Membership, Organization, User
    from presence import hot, selectors, services
    from presence.engine import aggregate
    from presence.hot import layout
    from presence.models import Device, PresenceState

    users_n, per_user = args.users, args.devices_per_user
    stale_n = max(1, round(users_n * args.stale))
    # Spread the stale users evenly (every k-th), as real timeouts would be.
    step = users_n / stale_n
    stale_index = {int(i * step) for i in range(stale_n)}
    now = timezone.now()  # the sweep's `now`; every time below is relative to it
    fresh_seen, stale_seen = now - timedelta(seconds=10), now - timedelta(seconds=200)

    print(
        f"expiry sweep: {users_n:,} users x {per_user} devices = {users_n * per_user:,} devices, "
        f"{stale_n:,} users ({stale_n * per_user:,} devices) stale, {args.orgs} organizations"
    )
    t0 = time.perf_counter()
    orgs = [Organization.objects.create(slug=f"bench-{i}", name=f"Bench {i}") for i in range(args.orgs)]
    users = User.objects.bulk_create(
        [User(username=f"bench-{i:06d}", password="!") for i in range(users_n)], batch_size=CHUNK
    )
    Membership.objects.bulk_create(
        [Membership(user=u, organization=orgs[i % len(orgs)]) for i, u in enumerate(users)], batch_size=CHUNK
    )
    context_by_org = {}
    for org in orgs:
        sample = next(u for i, u in enumerate(users) if i % len(orgs) == orgs.index(org))
        inputs, org_id = selectors.presence_context_for(sample, now)
        context_by_org[org.pk] = (inputs, hot.encode_context(inputs, org_id))

    store = hot.store()
    client = store.client
    devices, states = [], []
    pipe = client.pipeline(transaction=False)
    stale_ids = []
    for i, user in enumerate(users):
        stale = i in stale_index
        seen = stale_seen if stale else fresh_seen
        org_id = orgs[i % len(orgs)].pk
        rows = [
            Device(
                device_id=f"{user.pk:08d}{d:02d}".ljust(32, "0"),
                user=user,
                label=f"device {d}",
                registered_at=seen - timedelta(days=1),
                last_seen_at=seen - timedelta(seconds=d),
                # One device was used at its last signal, the others a while before.
                last_active_at=seen - timedelta(seconds=0 if d == 0 else 90 * d),
                last_seq=100 + d,
            )
            for d in range(per_user)
        ]
        devices.extend(rows)
        hot_devices = [selectors.hot_device_of(row) for row in rows]
        inputs, ctx = context_by_org[org_id]
        # The decision as the user's last heartbeat stored it, at that heartbeat's time.
        decision = aggregate(replace(inputs, devices=tuple(d.engine_input() for d in hot_devices)), seen)
        hot_decision = hot.HotDecision.of(decision)
        fields = {
            layout.FIELD_VERSION: "0",
            layout.FIELD_LOADED: layout.LOADED,
            layout.FIELD_CONTEXT: ctx,
            layout.FIELD_DECISION: hot_decision.encode(),
        }
        for device in hot_devices:
            fields.update(hot.device_fields(device))
        pipe.hset(store.user_key(user.pk), mapping=fields)
        if hot_decision.valid_until is not None:
            pipe.zadd(store.shard(user.pk).due, {str(user.pk): hot_decision.valid_until})
        states.append(
            PresenceState(
                user=user,
                status=decision.status,
                activity=decision.activity,
                status_msg=decision.status_msg or "",
                last_active_at=decision.last_active,
                currently_active=decision.currently_active,
                reason=decision.reason,
                valid_until=decision.valid_until,
                changed_at=seen,
                computed_at=seen,
            )
        )
        if stale:
            stale_ids.append(user.pk)
        if len(pipe) >= CHUNK:
            pipe.execute()
    pipe.execute()
    store.lost_shards()  # a running deployment: every shard has its epoch
    Device.objects.bulk_create(devices, batch_size=CHUNK)
    PresenceState.objects.bulk_create(states, batch_size=CHUNK)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"populated in {time.perf_counter() - t0:.1f} s")

    first_fresh = next(u for i, u in enumerate(users) if i not in stale_index)
    check_replica(first_fresh, fresh_seen, users[min(stale_index)], stale_seen)

    due_now = len(store.due(now.timestamp(), users_n + 1))
    print(f"users due at `now` before the sweep: {due_now:,} (expected {stale_n:,})")

    # --- the measured sweep ---------------------------------------------------------------
    queries = {"n": 0}

    def count(execute, sql, params, many, context):
        queries["n"] += 1
        return execute(sql, params, many, context)

    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    with connection.execute_wrapper(count):
        t0 = time.perf_counter()
        swept = services.sweep_expired(now)
        elapsed = time.perf_counter() - t0
    if profiler is not None:
        profiler.stop()

    # --- verification ----------------------------------------------------------------------
    offline_db = PresenceState.objects.filter(user_id__in=stale_ids, status="offline").count()
    decisions = store.read_decisions(stale_ids)
    offline_hot = sum(1 for d in decisions.values() if hot.HotDecision.decode(d).status == "offline")
    versions = {}
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.hget(store.user_key(user.pk), layout.FIELD_VERSION)
    for user, ver in zip(users, pipe.execute(), strict=True):
        versions[user.pk] = ver
    stale_set = set(stale_ids)
    recomputed = {uid for uid, ver in versions.items() if ver != "0" and uid not in _sample_ids}
    recomputed_expected = stale_set - _sample_ids
    left_due = len(store.due(now.timestamp(), users_n + 1))

    # --- baselines in the same run ----------------------------------------------------------
    t1 = time.perf_counter()
    noop = services.sweep_expired(now)
    noop_elapsed = time.perf_counter() - t1
    # One recompute of a fresh user (no visible change: no row write, no publish), the floor of
    # any per-user sweep cost.
    fresh_sample = [u for i, u in enumerate(users) if i not in stale_index][1:51]
    t1 = time.perf_counter()
    for user in fresh_sample:
        services.recompute(user, now)
    recompute_ms = (time.perf_counter() - t1) / len(fresh_sample) * 1e3

    per_user_ms = elapsed / max(swept, 1) * 1e3
    ok = swept == stale_n and offline_db == stale_n and offline_hot == stale_n and left_due == 0
    ok = ok and recomputed == recomputed_expected
    print()
    print(f"sweep_expired(now):        {elapsed * 1e3:9.1f} ms{'  (under the profiler)' if profiler else ''}")
    print(f"users recomputed:          {swept:9,d}  (expected {stale_n:,})")
    print(f"per recomputed user:       {per_user_ms:9.2f} ms   ({queries['n'] / max(swept, 1):.1f} SQL queries each)")
    print(f"offline after (DB / hot):  {offline_db:,} / {offline_hot:,} of {stale_n:,}; still due: {left_due}")
    print(f"only the stale recomputed: {recomputed == recomputed_expected}")
    print(f"baseline, no-op sweep:     {noop_elapsed * 1e3:9.1f} ms  (recomputed {noop})")
    print(f"baseline, recompute() of a fresh user (no visible change): {recompute_ms:.2f} ms")
    print(f"per swept user / baseline recompute = {per_user_ms / recompute_ms:.2f}")
    verdict = "met" if elapsed < TARGET_SECONDS else "MISSED"
    print(f"target < {TARGET_SECONDS:.0f} s: {verdict} (sweep / target = {elapsed / TARGET_SECONDS:.2f})")
    print(f"verification: {'OK' if ok else 'FAILED'}")
    if profiler is not None:
        print(profiler.output_text(unicode=False, color=False, show_all=False))
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": "expiry_sweep",
                    "users": users_n,
                    "devices": users_n * per_user,
                    "stale_users": stale_n,
                    "sweep_ms": elapsed * 1e3,
                    "recomputed": swept,
                    "per_user_ms": per_user_ms,
                    "queries": queries["n"],
                    "noop_sweep_ms": noop_elapsed * 1e3,
                    "recompute_fresh_ms": recompute_ms,
                    "verified": ok,
                }
            )
        )
    return 0 if ok else 1


_sample_ids: set[int] = set()


def check_replica(fresh_user, fresh_seen, stale_user, stale_seen) -> None:
    """Rebuild two users with `services.recompute` and compare with what was written directly."""
    from presence import hot, services
    from presence.hot import layout
    from presence.models import PresenceState

    store = hot.store()
    for user, seen in ((fresh_user, fresh_seen), (stale_user, stale_seen)):
        written = store.read(user.pk)
        row = PresenceState.objects.get(user=user)
        store.client.delete(store.user_key(user.pk))  # not loaded: recompute rebuilds from the rows
        services.recompute(user, seen)
        rebuilt = store.read(user.pk)
        score = store.client.zscore(store.shard(user.pk).due, str(user.pk))
        after = PresenceState.objects.get(user=user)
        if rebuilt != written:
            diff = {
                k: (written.get(k), rebuilt.get(k))
                for k in set(written) | set(rebuilt)
                if written.get(k) != rebuilt.get(k)
            }
            raise SystemExit(f"the direct hot-store write differs from recompute's for user {user.pk}: {diff}")
        if after.computed_at != row.computed_at:
            raise SystemExit(f"recompute rewrote the presence row of user {user.pk}: the bulk rows differ")
        decision = hot.HotDecision.decode(rebuilt[layout.FIELD_DECISION])
        if score != decision.valid_until:
            raise SystemExit(f"due score {score} != valid_until {decision.valid_until}")
        _sample_ids.add(user.pk)
    print("replica check: the direct writes equal what services.recompute writes (2 sample users)")


if __name__ == "__main__":
    raise SystemExit(main())
