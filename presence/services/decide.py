"""Deciding a user's presence again from every input, after a change of a slow input (manual
status, calendar, preferences, policy, membership, Microsoft import, a device signed in or out,
an admin's action) or where the hot store cannot decide alone."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from django.db import transaction
from django.utils import timezone

import presence.services.funnel as funnel
from orgs.models import User
from presence import decisions, hot, selectors
from presence.engine import aggregate
from presence.hot import layout
from presence.models import Device, PresenceState

logger = logging.getLogger(__name__)

# After this many lost compare-and-sets (heartbeats kept moving the user's version on), the new
# inputs are written regardless.
_ATTEMPTS = 10


def recompute(
    user: User, now: datetime | None = None, forget_devices: Iterable[str] = (), source: str = "recompute"
) -> PresenceState:
    """Decide the user's presence from the stored inputs and hand it to the funnel.

    The user's presence row is locked while deciding, so two processes recomputing the same user
    at once cannot store an older decision over a newer one: the second waits, then reads the
    inputs the first had not seen. Heartbeats do not take that lock; the hot store's version
    check makes whichever of the two wrote second read again. The row is written only when it
    does not show the new decision already.
    """
    store = hot.store()
    forget = set(forget_devices)
    removed = tuple(prefix + device_id for device_id in forget for prefix in hot.DEVICE_FIELD_PREFIXES)
    with transaction.atomic():
        _, created = PresenceState.objects.get_or_create(
            user=user, defaults={"changed_at": timezone.now(), "computed_at": timezone.now()}
        )
        row = PresenceState.objects.select_for_update().get(user=user)
        now = now or timezone.now()
        inputs, organization_id = selectors.presence_context_for(user, now)
        context = hot.encode_context(inputs, organization_id)
        rebuilt: list[hot.HotDevice] | None = None
        for attempt in range(_ATTEMPTS + 1):
            hot_user = hot.HotUser.parse(store.read(user.pk))
            fields = {layout.FIELD_CONTEXT: context}
            if hot_user.loaded:
                devices = [d for d in hot_user.devices.values() if d.device_id not in forget]
            else:
                # First use, or the hot store lost its data: rebuild the devices from the database.
                if rebuilt is None:
                    rows = Device.objects.filter(user=user)
                    rebuilt = selectors.devices_on_rebuild(rows, row.status, inputs.policy.device_timeout, now)
                devices = rebuilt
                for device in devices:
                    fields.update(hot.device_fields(device))
                fields[layout.FIELD_LOADED] = layout.LOADED
            decision = hot.HotDecision.of(
                aggregate(replace(inputs, devices=tuple(d.engine_input() for d in devices)), now)
            )
            expected_version: int | None = hot_user.version
            if attempt == _ATTEMPTS:
                # The new inputs must land all the same: write them with a decision that is
                # already due, so that the next heartbeat or reader decides again from them and
                # the devices as they are then.
                logger.warning("Presence of user %s kept changing while recomputed; forcing the new inputs", user.pk)
                decision = replace(decision, valid_until=now.timestamp())
                expected_version = None
            before = None if created else hot_user.decision or decisions.of_row(row)
            item = funnel.Commit(
                user.pk,
                user.public_id,
                organization_id,
                before,
                decision,
                source,
                expected_version,
                fields=fields,
                remove=removed,
                row=row,
            )
            if funnel.commit([item])[0]:
                break
    return row if decisions.of_row(row) == decision else decisions.unsaved_row(user.pk, decision)


def recompute_organization(organization_id: int, source: str = "policy") -> int:
    count = 0
    for user in User.objects.filter(membership__organization_id=organization_id).iterator(chunk_size=500):
        recompute(user, source=source)
        count += 1
    return count


def recompute_user_by_id(user_id: int, source: str = "membership") -> None:
    user = User.objects.filter(pk=user_id).first()
    if user is not None:
        recompute(user, source=source)
