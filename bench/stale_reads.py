"""`GET /api/v1/peers?limit=500` of an organization whose 500 members' decisions all went stale.

    python bench/stale_reads.py              # 500 colleagues, 7 requests of each path in each scenario
    python bench/stale_reads.py --quick      # 50 colleagues, 3 requests of each (a smoke run)

With beat stopped, nothing recomputes a decision once its `valid_until` has passed, and a read of
such a user has to decide it again. Before (the code up to commit e35b02e, kept here as
`old_fresh_presence_of`: an A/B switch that exists only in this script), the read recomputed
each stale user through `services.recompute_from_hot` (or `services.recompute` without a hot
decision): a transaction, `SELECT … FOR UPDATE` of the presence row, a compare-and-set of the
hot hash, an `UPDATE` of the row and a publish to the organization's group that the request
waited for, per user. After (`selectors.fresh_presence_of`), the read decides in memory with the
engine and stores nothing; the sweep does that.

The request goes through Django's test client in this process (URL conf, DRF token
authentication, pagination, serializers, as served), on PostgreSQL (own database,
`sparks_bench_reads`, created and dropped) and Redis (db 7, flushed at start and end; the
channel layer is Redis pub/sub, as deployed). One organization: the reader and `--members`
colleagues, one device each. Half of them went silent 400 s ago (device timeout 120 s: now
offline); the other half were seen 10 s ago with a manual "busy" that ended 5 s ago (now
available). Two scenarios: the hot store holds every colleague (the usual case), and Redis lost
its data (every input then comes from the database). Before every timed request the same stale
state is staged again (hot hashes and their `due` scores, presence rows, manual statuses,
devices, relative to the current time), and the two paths alternate request by request. SQL
statements are counted with `connection.execute_wrapper` (every statement Django's cursor sends).

Verification: both paths answer the expected status for every colleague; the old one locked and
wrote every row, the new one locked and wrote nothing and left the rows and the hot decisions as
staged. The baseline, in the same rounds: the same page once the sweep stored every decision
(the sweep must store exactly what the reads answered).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _stack

DB_NAME = "sparks_bench_reads"
REDIS_DB = 7
CHUNK = 1000
# Past the device timeout (120 s) and the lag a rebuild from the database allows a device's
# last-seen time (`selectors.devices_on_rebuild`: 180 s + 60 s): offline in both scenarios.
SILENT_SECONDS = 400
SCENARIOS = {
    "hot": "the hot store holds every colleague (beat stopped)",
    "database": "Redis lost its data: inputs from the database",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=500, help="colleagues of the reader (the page size)")
    parser.add_argument("--requests", type=int, default=7, help="timed requests of each path and scenario")
    parser.add_argument("--quick", action="store_true", help="50 colleagues, 3 requests of each path")
    parser.add_argument("--keep", action="store_true", help="keep the database and Redis db afterwards")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    if args.quick:
        args.members, args.requests = 50, 3

    return _stack.run_on_own_data(DB_NAME, REDIS_DB, lambda: run(args), keep=args.keep)


# --- The read path before, for the A/B comparison only ---------------------------------------


def old_fresh_presence_of(users, now=None):
    """`services.fresh_presence_of` as it was at commit e35b02e (verbatim but for the names)."""
    from django.utils import timezone

    from presence import decisions as decisions_
    from presence import hot, services
    from presence.models import PresenceState

    now = now or timezone.now()
    users = list(users)
    decisions = hot.store().read_decisions([u.pk for u in users])
    states = {}
    for user in users:
        encoded = decisions.get(user.pk)
        if encoded is not None:
            decision = hot.HotDecision.decode(encoded)
            fresh = not decision.is_stale(now.timestamp())
            states[user.pk] = decisions_.unsaved_row(user.pk, decision) if fresh else old_recompute_from_hot(user, now)
            continue
        stored = getattr(user, "presence_state", None)
        if stored is None:
            states[user.pk] = PresenceState(user_id=user.pk)
        elif stored.valid_until is not None and stored.valid_until <= now:
            states[user.pk] = services.recompute(user, now, source="expiry")
        else:
            states[user.pk] = stored
    return states


def old_recompute_from_hot(user, now=None, source="expiry"):
    """`services.recompute_from_hot` as it was at commit e35b02e, written with today's converters:
    the same locks, writes and publishing."""
    from django.db import transaction
    from django.utils import timezone

    from presence import decisions, events, hot, services
    from presence.engine import aggregate, visible
    from presence.hot import layout
    from presence.models import PresenceState

    store = hot.store()
    with transaction.atomic():
        state = PresenceState.objects.select_for_update().filter(user_id=user.pk).first()
        now = now or timezone.now()
        for _ in range(10):
            hot_user = hot.HotUser.parse(store.read(user.pk))
            context = hot.HotContext.decode(hot_user.context) if state is not None and hot_user.ready else None
            if context is None or not context.current:
                return services.recompute(user, now, source=source)
            encoded = hot.HotDecision.of(aggregate(context.with_devices(list(hot_user.devices.values())), now))
            commit = hot.UserCommit(
                user.pk, hot_user.version, {layout.FIELD_DECISION: encoded.encode()}, encoded.valid_until
            )
            if store.commit_users([commit])[0]:
                break
        visible_change = visible(hot_user.decision) != visible(encoded)
        if visible_change or visible(state) != visible(encoded):
            decisions.copy_to_row(state, encoded, now)
            state.save(update_fields=decisions.STATE_FIELDS)
        else:
            state = decisions.unsaved_row(user.pk, encoded)
        if visible_change:
            change = events.PresenceChange.of(context.organization_id, user.public_id, encoded, source)
            transaction.on_commit(lambda: events.publish(change))
    return state


# --- The organization, staged stale ------------------------------------------------------------


class Organization:
    """The reader and its colleagues, and a way to put every colleague back in the stale state."""

    def __init__(self, members: int) -> None:
        from rest_framework.authtoken.models import Token

        from orgs.models import Membership, User
        from orgs.models import Organization as Org
        from presence import selectors
        from presence.models import Device, ManualStatus, PresenceState
        from presence.vocabulary import Status

        now = _now()
        self.org = Org.objects.create(slug="bench-reads", name="Bench reads")
        reader = User.objects.create(username="aaa-reader", password="!")
        self.members = User.objects.bulk_create(
            [User(username=f"member-{i:05d}", password="!") for i in range(members)], batch_size=CHUNK
        )
        Membership.objects.bulk_create(
            [Membership(user=u, organization=self.org) for u in [reader, *self.members]], batch_size=CHUNK
        )
        self.token = Token.objects.create(user=reader).key
        self.devices = Device.objects.bulk_create(
            [
                Device(
                    device_id=f"{u.pk:010d}".ljust(32, "0"),
                    user=u,
                    label="laptop",
                    registered_at=now - timedelta(days=1),
                    last_seen_at=now,
                    last_active_at=now,
                    last_seq=10,
                )
                for u in self.members
            ],
            batch_size=CHUNK,
        )
        self.silent = {u.pk for i, u in enumerate(self.members) if i % 2 == 0}
        self.manuals = ManualStatus.objects.bulk_create(
            [
                ManualStatus(user=u, status=Status.BUSY, message="Focus", until=now, set_at=now)
                for u in self.members
                if u.pk not in self.silent
            ],
            batch_size=CHUNK,
        )
        self.states = PresenceState.objects.bulk_create(
            [PresenceState(user=u, changed_at=now, computed_at=now) for u in self.members], batch_size=CHUNK
        )
        self.base_inputs, _ = selectors.presence_context_for(self.members[0], now)  # the organization's defaults
        self.expected = {str(u.public_id): "offline" if u.pk in self.silent else "available" for u in self.members}

    def stage(self, keep_hot: bool = True) -> None:
        """Every colleague's decision stale as of now, in the hot store and the database, exactly as
        the hot path and the write-behind would have left it; without `keep_hot`, as a restarted Redis
        leaves it (the database only)."""
        from presence import decisions, hot, selectors
        from presence.engine import ManualInput, aggregate
        from presence.hot import layout
        from presence.models import Device, ManualStatus, PresenceHistory, PresenceState
        from presence.vocabulary import Status

        now = _now()
        store = hot.store()
        silent_seen, live_seen = now - timedelta(seconds=SILENT_SECONDS), now - timedelta(seconds=10)
        manual_until = now - timedelta(seconds=5)
        by_user = {}
        for device in self.devices:
            seen = silent_seen if device.user_id in self.silent else live_seen
            device.last_seen_at = device.last_active_at = seen
            by_user[device.user_id] = device
        for manual in self.manuals:
            manual.until, manual.set_at = manual_until, live_seen - timedelta(minutes=30)
        manual_input = ManualInput(Status.BUSY, "Focus", manual_until, live_seen - timedelta(minutes=30))
        pipe = store.client.pipeline(transaction=False)
        for state in self.states:
            device = by_user[state.user_id]
            silent = state.user_id in self.silent
            inputs = self.base_inputs if silent else replace(self.base_inputs, manual=manual_input)
            hot_device = selectors.hot_device_of(device)
            # The decision as the device's last signal left it, at that signal's time.
            decision = aggregate(replace(inputs, devices=(hot_device.engine_input(),)), device.last_seen_at)
            encoded = hot.HotDecision.of(decision)
            fields = {
                layout.FIELD_VERSION: "0",
                layout.FIELD_LOADED: layout.LOADED,
                layout.FIELD_CONTEXT: hot.encode_context(inputs, self.org.pk),
                layout.FIELD_DECISION: encoded.encode(),
                **hot.device_fields(hot_device),
            }
            shard = store.shard(state.user_id)
            key = shard.user(state.user_id)
            pipe.delete(key)
            if keep_hot:
                pipe.hset(key, mapping=fields).zadd(shard.due, {str(state.user_id): encoded.valid_until})
            else:
                pipe.zrem(shard.due, str(state.user_id))
            decisions.copy_to_row(state, encoded, device.last_seen_at)
        for shard in store.shards:  # one DEL per shard: its keys share one slot
            pipe.delete(shard.history, shard.persist, shard.dirty)
        pipe.execute()
        fields = ["status", "activity", "status_msg", "last_active_at", "currently_active", "reason", "valid_until"]
        PresenceState.objects.bulk_update(self.states, [*fields, "changed_at", "computed_at"], batch_size=CHUNK)
        ManualStatus.objects.bulk_update(self.manuals, ["until", "set_at"], batch_size=CHUNK)
        Device.objects.bulk_update(self.devices, ["last_seen_at", "last_active_at"], batch_size=CHUNK)
        PresenceHistory.objects.all().delete()

    def footprint(self) -> tuple:
        """What a read must not change: the presence rows and the hot decisions."""
        from presence import hot
        from presence.models import PresenceState

        ids = [u.pk for u in self.members]
        rows = tuple(PresenceState.objects.filter(user_id__in=ids).order_by("user_id").values_list())
        decisions = hot.store().read_decisions(ids)
        return rows, tuple(sorted(decisions.items()))


def _now():
    from django.utils import timezone

    return timezone.now()


# --- The measurement ---------------------------------------------------------------------------


class Statements:
    """Every SQL statement Django's cursor sends, by kind."""

    def __init__(self) -> None:
        self.total = self.locking = self.writes = 0

    def __call__(self, execute, sql, params, many, context):
        self.total += 1
        head = sql.lstrip()[:6].upper()
        if "FOR UPDATE" in sql.upper():
            self.locking += 1
        elif head in ("INSERT", "UPDATE", "DELETE"):
            self.writes += 1
        return execute(sql, params, many, context)


def timed_get(client, url: str, token: str) -> tuple[float, Statements, dict]:
    from django.db import connection

    statements = Statements()
    with connection.execute_wrapper(statements):
        t0 = time.perf_counter()
        response = client.get(url, HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="127.0.0.1")
        elapsed = time.perf_counter() - t0
    if response.status_code != 200:
        raise SystemExit(f"GET {url}: {response.status_code} {response.content[:300]!r}")
    return elapsed, statements, response.json()


def run(args) -> int:
    from django.test import Client

    from presence import selectors

    t0 = time.perf_counter()
    org = Organization(args.members)
    url = f"/api/v1/peers?limit={args.members}"
    client = Client()
    new_fresh_presence_of = selectors.fresh_presence_of
    paths = {"before": old_fresh_presence_of, "after": new_fresh_presence_of}
    print(
        f"stale reads: GET {url}, {args.members} colleagues (one device each), every decision stale, "
        f"beat stopped; {args.requests} requests of each path in each scenario, alternating"
    )
    print(f"populated in {time.perf_counter() - t0:.1f} s")

    cases = [(scenario, name) for scenario in SCENARIOS for name in paths] + [("hot", "swept")]
    results = {case: {"ms": [], "statements": [], "locking": [], "writes": []} for case in cases}
    ok = True
    try:
        for scenario in SCENARIOS:
            for n in range(args.requests + 1):  # the first round warms up (token, imports): not counted
                names = list(paths) if n % 2 else list(reversed(paths))
                for name in names + (["swept"] if scenario == "hot" else []):
                    org.stage(keep_hot=scenario == "hot")
                    if name == "swept":
                        ok = sweep(org) and ok  # the baseline: the same page once the sweep stored everything
                    staged = org.footprint()
                    selectors.fresh_presence_of = paths.get(name, new_fresh_presence_of)  # the view reads it here
                    elapsed, statements, body = timed_get(client, url, org.token)
                    ok = check(org, scenario, name, body, statements, org.footprint() == staged) and ok
                    if n:
                        result = results[scenario, name]
                        result["ms"].append(elapsed * 1e3)
                        result["statements"].append(statements.total)
                        result["locking"].append(statements.locking)
                        result["writes"].append(statements.writes)
    finally:
        selectors.fresh_presence_of = new_fresh_presence_of

    def line(label: str, result: dict) -> str:
        ms, statements = result["ms"], statistics.median(result["statements"])
        locking, writes = statistics.median(result["locking"]), statistics.median(result["writes"])
        return (
            f"  {label:<32}{statistics.median(ms):9.1f} ms (p90 {_stack.percentile(ms, 90):7.1f})"
            f"{statements:9.0f} statements  ({locking:.0f} FOR UPDATE, {writes:.0f} writes)"
        )

    print()
    print(f"{'':<34}{'median per request':>27}{'SQL per request':>25}")
    figures = {}
    swept = results["hot", "swept"]
    for scenario, title in SCENARIOS.items():
        before, after = results[scenario, "before"], results[scenario, "after"]
        print(f"{title}:")
        print(line("before (locks, writes, publishes)", before))
        print(line("after (decided in memory)", after))
        if scenario == "hot":
            print(line("baseline: fresh (swept first)", swept))
        speedup = statistics.median(before["ms"]) / statistics.median(after["ms"])
        print(f"  before / after = {speedup:.1f}; after / baseline = {_ratio(after, swept):.2f}")
        figures[scenario] = {
            "before_ms": statistics.median(before["ms"]),
            "after_ms": statistics.median(after["ms"]),
            "before_statements": statistics.median(before["statements"]),
            "after_statements": statistics.median(after["statements"]),
        }
    print(f"verification: {'OK' if ok else 'FAILED'}")
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": "stale_reads",
                    "members": args.members,
                    "requests": args.requests,
                    **figures,
                    "fresh_ms": statistics.median(swept["ms"]),
                    "fresh_statements": statistics.median(swept["statements"]),
                    "verified": ok,
                }
            )
        )
    return 0 if ok else 1


def _ratio(result: dict, baseline: dict) -> float:
    return statistics.median(result["ms"]) / statistics.median(baseline["ms"])


def sweep(org: Organization) -> bool:
    """Run the sweep (and the write-behind): it must store what the reads answered."""
    from presence import services
    from presence.models import PresenceState

    swept = services.sweep_expired()
    services.persist_pending()
    stored = PresenceState.objects.filter(user__in=org.members).values_list("user__public_id", "status")
    if swept < len(org.members) or {str(k): v for k, v in stored} != org.expected:
        print(f"  the sweep ({swept} swept) did not store what the reads answered")
        return False
    return True


def check(org: Organization, scenario: str, name: str, body: dict, statements: Statements, untouched: bool) -> bool:
    """The page answers every colleague's status as the engine decides it now; the old path
    locked and wrote every row, the new one nothing at all."""
    ok = True
    answered = {peer["user_id"]: peer["status"] for peer in body["results"]}
    if answered != org.expected:
        wrong = sum(1 for k, v in org.expected.items() if answered.get(k) != v)
        print(f"  {scenario}, {name}: {wrong} colleague(s) answered a wrong status")
        ok = False
    if name != "before" and (statements.locking or statements.writes or not untouched):
        print(f"  {scenario}, {name}: locked {statements.locking}, wrote {statements.writes}, untouched {untouched}")
        ok = False
    if name == "before" and (statements.locking < len(org.members) or untouched):
        print(f"  {scenario}, before: locked only {statements.locking} row(s), untouched {untouched}")
        ok = False
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
