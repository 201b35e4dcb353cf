"""The expiry sweep: decisions that the passing of time changes (a device timing out, a manual
status ending, a calendar block starting), decided again when their `valid_until` comes."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

import presence.services.funnel as funnel
from orgs.models import User
from presence import hot
from presence.engine import aggregate
from presence.models import PresenceState
from presence.services.decide import recompute
from presence.vocabulary import Status
from sparks_site import metrics


@metrics.SWEEP_SECONDS.time()
def sweep_expired(now: datetime | None = None, batch_size: int = 500) -> int:
    """Decide again every user whose decision has passed its `valid_until`; idempotent.

    The due users come from the hot store's schedule (a sorted set by `valid_until` on Redis) and
    are decided from their hot state in batches: no database query for a user whose visible
    status stays, one locked batch update for those whose status changed. If the store lost its
    data (all of it, or a shard's), every user of what was lost that the database does not hold as
    plainly offline is recomputed once first, which rebuilds their hot state and schedule.
    """
    now = now or timezone.now()
    store = hot.store()
    swept = 0
    lost = store.lost_shards()
    if lost:
        maybe_live = PresenceState.objects.exclude(status=Status.OFFLINE, valid_until=None)
        for user in User.objects.filter(pk__in=maybe_live.values("user_id")).iterator(chunk_size=batch_size):
            if hot.layout.shard_of(user.pk) in lost and not hot.HotUser.parse(store.read(user.pk)).loaded:
                recompute(user, now, source="sweep")
                swept += 1
    while True:
        user_ids = store.due(now.timestamp(), batch_size)
        swept += _sweep_batch(user_ids, now)
        if len(user_ids) < batch_size:
            return swept


def _sweep_batch(user_ids: list[int], now: datetime) -> int:
    quiet: list[funnel.Commit] = []
    changed: list[int] = []
    slow: list[int] = []
    for user_id, raw in zip(user_ids, hot.store().read_many(user_ids), strict=True):
        item = _decide_from_hot(user_id, raw, now)
        if item is None:
            slow.append(user_id)
        elif item.visible_change:
            changed.append(user_id)
        else:
            quiet.append(item)
    # A decision that stays as colleagues see it needs no database: the hot store takes it alone.
    slow.extend(item.user_id for item, stored in zip(quiet, funnel.commit(quiet), strict=True) if not stored)
    slow.extend(_commit_changed(changed, now))
    users = User.objects.in_bulk(slow)
    forgotten = 0
    for user_id in slow:
        if user_id in users:
            recompute(users[user_id], now, source="sweep")
        else:
            hot.store().forget_user(user_id)  # deleted since it was scheduled
            forgotten += 1
    return len(user_ids) - forgotten


def _commit_changed(user_ids: list[int], now: datetime) -> list[int]:
    """Commit, in one locked batch, the decisions of users whose visible status changed with
    time; returns the users this could not do from the hot state (for a full recompute)."""
    if not user_ids:
        return []
    leftovers: list[int] = []
    with transaction.atomic():
        rows = {
            s.user_id: s
            for s in PresenceState.objects.select_for_update().filter(user_id__in=user_ids).order_by("user_id")
        }
        public_ids = dict(User.objects.filter(pk__in=list(rows)).values_list("pk", "public_id"))
        batch: list[funnel.Commit] = []
        # Read again under the lock: a heartbeat may have landed since the first read.
        for user_id, raw in zip(user_ids, hot.store().read_many(user_ids), strict=True):
            item = _decide_from_hot(user_id, raw, now, public_ids.get(user_id), rows.get(user_id))
            if item is None or item.row is None or item.public_id is None:
                leftovers.append(user_id)
            else:
                batch.append(item)
        leftovers.extend(item.user_id for item, stored in zip(batch, funnel.commit(batch), strict=True) if not stored)
    return leftovers


def _decide_from_hot(
    user_id: int, raw: dict[str, str], now: datetime, public_id: object = None, row: PresenceState | None = None
) -> funnel.Commit | None:
    """A user's decision from the hot state alone, as a commit of it; None when that state is not
    complete (the user is then recomputed from the database)."""
    hot_user = hot.HotUser.parse(raw)
    if not hot_user.ready:
        return None
    context = hot.HotContext.decode(hot_user.context)
    if not context.current:
        return None
    decision = hot.HotDecision.of(aggregate(context.with_devices(list(hot_user.devices.values())), now))
    return funnel.Commit(
        user_id, public_id, context.organization_id, hot_user.decision, decision, "sweep", hot_user.version, row=row
    )
