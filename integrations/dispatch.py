"""Publishing aggregated presence to Matrix and Microsoft Teams, coalesced per user and target.

`presence.events` hands every visible change to `enqueue` (a subscriber of presence's changes),
which only puts one message on the broker. From there:

1. `plan` (a task) decides, per user and target, what should be published: the user's
   presence while they share it externally and their organization allows it, "offline"
   (withdrawn) once they stop, and records it as the row's `desired` state.
2. A delivery is scheduled unless one is already pending for that user and target (a flag in
   the shared cache), a short moment later, so a burst of changes leaves one delivery.
3. `deliver` (a task) sends the newest `desired` state if it differs from what was `sent`
   last; on network errors, 429 and 5xx it schedules itself again with exponential backoff
   (or the peer's own wait), so the final state gets out once the peer is back. Teams is
   published to by `integrations.teams`, which works from its record of what SPARKS has in the
   user's Graph presence.

A decision taken from the user's Teams presence (reason `microsoft_presence`) is not published
back to Teams (`teams.own_state`); Matrix gets it like any other.

Beat keeps published states alive (`refresh_published`): Matrix decays a presence that no
client syncs to offline after ~30 s, and a Graph presence session lapses at its expiration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from integrations import mapping, matrix, microsoft, teams
from integrations.http import DeliveryError
from integrations.models import DispatchState, DispatchTarget, ExternalAccount, MatrixHomeserver, MicrosoftTenant
from orgs.models import User
from presence.selectors import current_presence
from presence.vocabulary import Activity, Status

logger = logging.getLogger(__name__)

WITHDRAWN: dict[str, str | None] = {
    "status": Status.OFFLINE.value,
    "activity": Activity.OFFLINE.value,
    "status_msg": None,
}

# A delivery that holds the lock longer than this is taken to have died.
_LOCK_SECONDS = 120
_BACKOFF_BASE_SECONDS = 2.0


# --- The retry schedule -----------------------------------------------------------------------


def retry_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before attempt `attempt + 1`, after `attempt` failures in a row.

    The peer's own wait (Retry-After, Matrix's retry_after_ms) wins when it gave one; otherwise
    2, 4, 8, ... seconds, capped at INTEGRATIONS_RETRY_MAX_SECONDS.
    """
    cap = float(settings.INTEGRATIONS_RETRY_MAX_SECONDS)
    if retry_after is not None:
        return max(1.0, retry_after)
    return min(cap, _BACKOFF_BASE_SECONDS * 2 ** max(0, attempt - 1))


# --- Who is published where -------------------------------------------------------------------


def dispatch_enabled() -> bool:
    return settings.PRESENCE_USE_AGGREGATOR and settings.PRESENCE_SERVER_DISPATCH


def shares_externally(user: User) -> bool:
    """The user chose to share and the organization allows it."""
    preferences = getattr(user, "presence_preferences", None)
    membership = getattr(user, "membership", None)
    if preferences is None or membership is None or not preferences.share_externally:
        return False
    policy = getattr(membership.organization, "policy", None)
    return policy is not None and policy.allow_external_dispatch


def _homeserver(user: User) -> MatrixHomeserver | None:
    membership = getattr(user, "membership", None)
    homeserver = getattr(membership.organization, "matrix_homeserver", None) if membership else None
    return homeserver if homeserver is not None and homeserver.enabled else None


def _tenant(user: User) -> MicrosoftTenant | None:
    membership = getattr(user, "membership", None)
    tenant = getattr(membership.organization, "microsoft_tenant", None) if membership else None
    return tenant if tenant is not None and tenant.enabled else None


def _account(user: User) -> ExternalAccount | None:
    return getattr(user, "external_account", None)


def matrix_user_id(user: User, homeserver: MatrixHomeserver) -> str:
    account = _account(user)
    return account.matrix_user_id if account and account.matrix_user_id else homeserver.matrix_user_id(user)


def targets_of(user: User) -> list[str]:
    """The targets configured for the user's organization and known for the user."""
    targets = []
    if _homeserver(user) is not None:
        targets.append(DispatchTarget.MATRIX.value)
    account = _account(user)
    if _tenant(user) is not None and account is not None and account.microsoft_object_id:
        targets.append(DispatchTarget.MICROSOFT.value)
    return targets


def _users(user_ids: Iterable[int] | None = None, public_ids: Iterable[str] | None = None):
    users = User.objects.select_related(
        "presence_preferences",
        "external_account",
        "membership__organization__policy",
        "membership__organization__matrix_homeserver",
        "membership__organization__microsoft_tenant",
    )
    if user_ids is not None:
        users = users.filter(pk__in=list(user_ids))
    if public_ids is not None:
        users = users.filter(public_id__in=list(public_ids))
    return users


# --- Planning ---------------------------------------------------------------------------------


def enqueue(changes: Iterable) -> None:
    """Hand visible presence changes to dispatch: one broker message, nothing else.

    Subscribed to presence's changes (`presence.events.subscribe`, in the app's ready()); never
    waits on Matrix or Microsoft, and does not retry a broker that is down (the next change, or
    beat's refresh, catches up). Nothing at all while dispatch is off.
    """
    if not dispatch_enabled():
        return
    payload = [
        {
            "user_id": c.user_id,
            "status": c.status,
            "activity": c.activity,
            "status_msg": c.status_msg,
            "reason": c.reason,
        }
        for c in changes
    ]
    if payload:
        plan_dispatch.apply_async(args=[payload], retry=False)


@dataclass(frozen=True, slots=True)
class Planned:
    user_id: int
    target: str
    scheduled: bool


def plan(changes: list[dict]) -> list[Planned]:
    """Record what should be published for each changed user, and schedule deliveries."""
    newest: dict[str, dict] = {}
    for change in changes:
        newest[str(change["user_id"])] = change  # a later change of the same user replaces earlier ones
    planned: list[Planned] = []
    for user in _users(public_ids=newest):
        change = newest[str(user.public_id)]
        state = {"status": change["status"], "activity": change["activity"], "status_msg": change["status_msg"] or None}
        planned.extend(_plan_user(user, state, change.get("reason") or ""))
    return planned


def _plan_user(user: User, state: dict, reason: str = "", refresh: bool = False) -> list[Planned]:
    shared = shares_externally(user)
    desired = state if shared else WITHDRAWN
    now = timezone.now()
    planned = []
    for target in targets_of(user):
        if shared:
            wanted = teams.own_state(desired, reason) if target == DispatchTarget.MICROSOFT else desired
            row, _ = DispatchState.objects.update_or_create(
                user=user, target=target, defaults={"desired": wanted, "desired_at": now}
            )
        else:
            # Never published to: nothing to withdraw, and no row for someone who never shared.
            row = DispatchState.objects.filter(user=user, target=target).first()
            if row is None:
                continue
            if row.desired != desired:
                row.desired, row.desired_at = desired, now
                row.save(update_fields=["desired", "desired_at"])
        scheduled = (row.pending or refresh) and schedule(user.pk, target, refresh=refresh)
        planned.append(Planned(user.pk, target, scheduled))
    return planned


def _pending_key(user_id: int, target: str) -> str:
    return f"integrations:dispatch:pending:{target}:{user_id}"


def _lock_key(user_id: int, target: str) -> str:
    return f"integrations:dispatch:lock:{target}:{user_id}"


def schedule(user_id: int, target: str, countdown: float | None = None, refresh: bool = False) -> bool:
    """Schedule a delivery unless one is already pending; True if this call scheduled it."""

    countdown = settings.INTEGRATIONS_DISPATCH_COALESCE_SECONDS if countdown is None else countdown
    if not cache.add(_pending_key(user_id, target), 1, timeout=_pending_timeout(countdown)):
        return False
    _enqueue_delivery(user_id, target, refresh, countdown)
    return True


def _reschedule(user_id: int, target: str, countdown: float, refresh: bool = False) -> None:
    """Schedule again from inside a delivery: this one is the pending delivery from now on."""
    cache.set(_pending_key(user_id, target), 1, timeout=_pending_timeout(countdown))
    _enqueue_delivery(user_id, target, refresh, countdown)


def _enqueue_delivery(user_id: int, target: str, refresh: bool, countdown: float) -> None:
    # In-process (the embedded default), the countdown is waited for too (sparks_site.periodic).
    deliver_presence.apply_async(args=[user_id, target, refresh], countdown=countdown)


def _pending_timeout(countdown: float) -> int:
    # Outlives the countdown, so no second delivery is scheduled meanwhile; expires if a worker
    # lost the task, so the next change or refresh schedules a new one.
    return int(countdown) + _LOCK_SECONDS


# --- Delivering -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    sent: bool
    error: str = ""
    retry_in: float | None = None


def deliver(user_id: int, target: str, refresh: bool = False) -> Delivery:
    """Send the newest desired state of one user to one target, if it was not sent already.

    `refresh` sends the last state again even when unchanged (a Matrix presence or a Graph
    session kept alive). One delivery per user and target at a time, across processes.
    """
    if not cache.add(_lock_key(user_id, target), 1, timeout=_LOCK_SECONDS):
        _reschedule(user_id, target, settings.INTEGRATIONS_DISPATCH_COALESCE_SECONDS or 1.0, refresh)
        return Delivery(sent=False, retry_in=settings.INTEGRATIONS_DISPATCH_COALESCE_SECONDS)
    try:
        # From here on, a new change schedules another delivery: none is lost while this sends.
        cache.delete(_pending_key(user_id, target))
        row = DispatchState.objects.filter(user_id=user_id, target=target).first()
        if row is None or (not row.pending and not refresh):
            return Delivery(sent=False)
        user = _users(user_ids=[user_id]).first()
        desired = row.desired
        if user is not None and desired != WITHDRAWN and not shares_externally(user):
            # Sharing or the organization's policy changed since this was planned (a policy
            # edit publishes nothing): withdraw instead.
            desired = WITHDRAWN
            DispatchState.objects.filter(pk=row.pk).update(desired=desired, desired_at=timezone.now())
            if desired == row.sent and not refresh:
                return Delivery(sent=False)
        try:
            if user is None:
                raise DeliveryError("the user no longer exists", retryable=False)
            _send(user, target, desired, refresh)
        except DeliveryError as error:
            return _failed(row, error, refresh)
        DispatchState.objects.filter(pk=row.pk).update(
            sent=desired, sent_at=timezone.now(), attempts=0, last_error="", last_error_at=None
        )
        return Delivery(sent=True)
    finally:
        cache.delete(_lock_key(user_id, target))


def _failed(row: DispatchState, error: DeliveryError, refresh: bool) -> Delivery:
    attempts = row.attempts + 1
    DispatchState.objects.filter(pk=row.pk).update(
        attempts=attempts, last_error=str(error)[:2000], last_error_at=timezone.now()
    )
    if not error.retryable:
        logger.warning("Presence of user %s not published to %s: %s", row.user_id, row.target, error)
        return Delivery(sent=False, error=str(error))
    delay = retry_delay(attempts, error.retry_after)
    logger.info("Presence of user %s to %s failed (%s); again in %.0f s", row.user_id, row.target, error, delay)
    _reschedule(row.user_id, row.target, delay, refresh)
    return Delivery(sent=False, error=str(error), retry_in=delay)


def _send(user: User, target: str, desired: dict, refresh: bool) -> None:
    if target == DispatchTarget.MATRIX:
        _send_matrix(user, desired)
    elif target == DispatchTarget.MICROSOFT:
        _send_microsoft(user, desired, refresh)
    else:
        raise DeliveryError(f"unknown target {target}", retryable=False)


def _send_matrix(user: User, desired: dict) -> None:
    homeserver = _homeserver(user)
    if homeserver is None:
        raise DeliveryError("the organization has no enabled Matrix homeserver", retryable=False)
    busy_supported = matrix.supports_busy(homeserver.base_url)
    presence = mapping.matrix_presence(desired["status"], desired.get("status_msg"), busy_supported)
    matrix.set_presence(homeserver.base_url, homeserver.as_token, matrix_user_id(user, homeserver), presence)


def _send_microsoft(user: User, desired: dict, refresh: bool) -> None:
    tenant = _tenant(user)
    account = _account(user)
    if tenant is None or account is None or not account.microsoft_object_id:
        raise DeliveryError("no enabled Microsoft tenant or Entra object id for the user", retryable=False)
    credentials = microsoft.Credentials(tenant.tenant_id, tenant.client_id, tenant.client_secret)
    wanted = mapping.graph_presence(desired["status"], desired["activity"])
    teams.publish(user.pk, credentials, account.microsoft_object_id, wanted, refresh)


# --- Keeping published states alive -------------------------------------------------------------


def refresh_published(now: datetime | None = None) -> int:
    """Schedule the deliveries beat owes: published online states about to decay or lapse, and
    states still not delivered whose delivery chain was lost (a worker died). Returns how many."""
    if not dispatch_enabled():
        return 0
    now = now or timezone.now()
    scheduled = 0
    live = ~Q(sent__status=Status.OFFLINE.value) & Q(sent__isnull=False)
    age = timedelta(seconds=settings.MATRIX_PRESENCE_REFRESH_SECONDS)
    stale = DispatchState.objects.filter(live, target=DispatchTarget.MATRIX, sent_at__lte=now - age)
    for user_id in stale.values_list("user_id", flat=True).iterator(chunk_size=1000):
        scheduled += schedule(user_id, DispatchTarget.MATRIX, countdown=0, refresh=True)
    # Teams by what SPARKS recorded there: a delivery that needed no call (a new message only)
    # updates `sent_at` but extends no expiry.
    for user_id in teams.renewals_due(now):
        scheduled += schedule(user_id, DispatchTarget.MICROSOFT, countdown=0, refresh=True)
    unsent = DispatchState.objects.exclude(desired=None).filter(
        Q(last_error_at__isnull=True)
        | Q(last_error_at__lte=now - timedelta(seconds=settings.INTEGRATIONS_RETRY_MAX_SECONDS))
    )
    for row in unsent.only("user_id", "target", "desired", "sent").iterator(chunk_size=1000):
        if row.pending:
            scheduled += schedule(row.user_id, row.target, countdown=0)
    return scheduled


def redispatch(user: User) -> list[Planned]:
    """Publish the user's presence again now, even where it was sent already (the admin's
    "re-dispatch now": after the other side lost or changed it, e.g. a Teams presence reset by
    hand, a homeserver restored from a backup)."""
    DispatchState.objects.filter(user=user).update(sent=None)
    state = current_presence(user)
    return _plan_user(user, state_dict(state), state.reason, refresh=True)


def state_dict(state) -> dict:
    """A presence state in the shape dispatch stores (for callers outside `plan`)."""
    return {"status": state.status, "activity": state.activity, "status_msg": state.status_msg or None}


# --- The tasks --------------------------------------------------------------------------------
# The two steps dispatch enqueues itself are its own tasks (`integrations.tasks` holds those beat
# runs). Their names stay the ones messages on a broker already carry.


@shared_task(name="integrations.tasks.plan_dispatch", ignore_result=True)
def plan_dispatch(changes: list[dict]) -> int:
    """Record what each changed user should show on Matrix / Teams, and schedule deliveries."""
    return len(plan(changes))


@shared_task(name="integrations.tasks.deliver_presence", ignore_result=True)
def deliver_presence(user_id: int, target: str, refresh: bool = False) -> bool:
    """Send one user's newest state to one target; retries schedule this task again."""
    return deliver(user_id, target, refresh).sent
