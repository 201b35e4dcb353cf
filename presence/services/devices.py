"""Devices signing in and out, and the ids they are known by."""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from orgs.models import User
from presence import history, hot, selectors
from presence.models import DEVICE_ID_MAX_LENGTH, Device
from presence.services.decide import recompute
from presence.vocabulary import ActivityValue, NetworkValue, VisibilityValue


class DeviceNotFound(Exception):
    """The device does not exist or belongs to someone else (the caller answers 404 alike)."""


def pseudonymous_device_id(user: User, installation_id: str) -> str:
    """A keyed hash of the installation: stable for the same user and installation, and not
    reversible or linkable across users without the server's key."""
    message = f"{user.pk}\x00{installation_id}".encode()
    return hmac.new(settings.PRESENCE_DEVICE_ID_KEY.encode(), message, hashlib.sha256).hexdigest()[:32]


def possible_device_id(device_id: object) -> bool:
    """False for a device id no device can have, which is then simply not found: not a string,
    empty, too long, or with a character PostgreSQL refuses even to compare with (NUL, `%00` in a
    URL) or that cannot be encoded at all (a lone surrogate, which JSON may carry)."""
    if not isinstance(device_id, str) or not 0 < len(device_id) <= DEVICE_ID_MAX_LENGTH or "\x00" in device_id:
        return False
    try:
        device_id.encode()
    except UnicodeEncodeError:
        return False
    return True


def register_device(user: User, installation_id: str, label: str | None = None) -> tuple[Device, bool]:
    """Sign a device in (or again). Registering counts as the device being there and used.

    Signing in again starts a new signal sequence: an app that restarts may count from zero.
    """
    now = timezone.now()
    device_id = pseudonymous_device_id(user, installation_id)
    with transaction.atomic():
        device, created = Device.objects.select_for_update().get_or_create(
            device_id=device_id,
            defaults={
                "user": user,
                "label": label or "",
                "registered_at": now,
                "last_seen_at": now,
                "last_active_at": now,
            },
        )
        if not created:
            device.last_seen_at = now
            device.last_active_at = now
            device.network = NetworkValue.ONLINE
            device.activity = ActivityValue.ACTIVE
            # A new session knows nothing of the old one's call, meeting or hidden window, and
            # would never send the signal that ends them: start from a fresh, visible session.
            device.visibility = VisibilityValue.VISIBLE
            device.in_call = False
            device.in_meeting = False
            device.last_seq = -1
            if label is not None:
                device.label = label
            device.save()
        hot.store().commit_device(user.pk, selectors.hot_device_of(device, flushed_at=now.timestamp()), None)
        history.record_devices([history.device_entry(user.pk, device_id, device.label, "live", now)])
    recompute(user, source="device:sign_in")
    return device, created


def sign_out_device(user: User, device_id: str, source: str = "device:sign_out") -> None:
    label = Device.objects.filter(user=user, device_id=device_id).values_list("label", flat=True).first()
    deleted, _ = Device.objects.filter(user=user, device_id=device_id).delete()
    if not deleted:
        raise DeviceNotFound(device_id)
    history.record_devices([history.device_entry(user.pk, device_id, label or "", "signed_out", timezone.now())])
    recompute(user, forget_devices=[device_id], source=source)
