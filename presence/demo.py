"""The demo organization's colleagues, acted out so that the people page has something to show on
`make run`: one is available, one in a call, one busy and one in do not disturb by their own
choice (with a message and an end), one away, one offline.

Each acting colleague has one device (installation `demo-<username>`), sent the signals of its
part through the same service as a real device's (`services.ingest_signals`). A device counts
for PRESENCE_DEVICE_TIMEOUT_SECONDS after its last signal, so the parts are played again every
heartbeat interval by the beat entry `presence-demo-colleagues`, which the settings add only when
DEMO_COLLEAGUES is on (`make run` turns it on); `manage.py demo_presence` plays them once.
A manual status is set again only once it has ended: a demo user who signed in and chose another
keeps it. Users not yet seeded (`manage.py seed_demo`) are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from orgs.models import User
from presence import services
from presence.models import Device, ManualStatus
from presence.vocabulary import SignalType, Status


@dataclass(frozen=True, slots=True)
class Part:
    username: str
    signals: tuple[tuple[SignalType, str | None], ...]
    manual: Status | None = None
    message: str = ""
    lasts: timedelta | None = None


ACTIVE = ((SignalType.HEARTBEAT, None), (SignalType.ACTIVITY, "active"))
PARTS = (
    Part("bob", ACTIVE),
    Part("dave", ((SignalType.HEARTBEAT, None), (SignalType.CALL, "start"))),
    Part("demo-admin", ACTIVE, Status.BUSY, "Quarterly planning", timedelta(hours=2)),
    Part("erin", ACTIVE, Status.DND, "Focus time", timedelta(minutes=90)),
    Part("frank", ((SignalType.HEARTBEAT, None), (SignalType.ACTIVITY, "idle"))),
    # grace has no device: offline.
)


def play_demo_colleagues(now: datetime | None = None) -> int:
    """Play every part once; the number of colleagues played."""
    now = now or timezone.now()
    users = {user.username: user for user in User.objects.filter(username__in=[p.username for p in PARTS])}
    played = 0
    for part in PARTS:
        user = users.get(part.username)
        if user is None:
            continue
        if part.manual is not None:
            _keep_manual_status(user, part, now)
        device_id = _demo_device(user)
        seq = int(now.timestamp() * 1000)  # increasing across runs and restarts
        signals = [services.Signal(kind, value, seq + i) for i, (kind, value) in enumerate(part.signals)]
        services.ingest_signals(user, device_id, signals, rate_counted=True)
        played += 1
    return played


def _demo_device(user: User) -> str:
    installation_id = f"demo-{user.username}"
    device_id = services.pseudonymous_device_id(user, installation_id)
    if not Device.objects.filter(device_id=device_id).exists():
        services.register_device(user, installation_id, "Demo laptop")
    return device_id


def _keep_manual_status(user: User, part: Part, now: datetime) -> None:
    current = ManualStatus.objects.filter(user=user).first()
    if current is not None and (current.until is None or current.until > now):
        return
    until = now + part.lasts if part.lasts else None
    services.set_manual_status(user, part.manual, part.message, until)
