"""Celery tasks of presence: thin wrappers around services."""

from celery import shared_task

from presence import demo, history, services, sweep_clock


@shared_task(name="presence.tasks.sweep_expired_presence", ignore_result=True)
def sweep_expired_presence() -> int:
    """Recompute the users whose decision may have changed with time (devices timed out, a
    manual status or calendar block ended, ...). Idempotent: running it twice changes nothing.
    Its completion is recorded for /readyz, which names a sweep that stopped running."""
    swept = services.sweep_expired()
    sweep_clock.record_sweep()
    return swept


@shared_task(name="presence.tasks.persist_presence", ignore_result=True)
def persist_presence() -> int:
    """Write the devices and decisions changed on the hot path to the database (write-behind)."""
    return services.persist_pending()


@shared_task(name="presence.tasks.recompute_organization", ignore_result=True)
def recompute_organization(organization_id: int) -> int:
    """Recompute every member after the organization's policy changed."""
    return services.recompute_organization(organization_id)


@shared_task(name="presence.tasks.recompute_user", ignore_result=True)
def recompute_user(user_id: int) -> None:
    services.recompute_user_by_id(user_id)


@shared_task(name="presence.tasks.flush_device_activity", ignore_result=True)
def flush_device_activity() -> int:
    """Copy devices' last-seen/last-active times from the hot store to the database."""
    return services.flush_device_activity()


@shared_task(name="presence.tasks.prune_presence_history", ignore_result=True)
def prune_presence_history() -> int:
    """Delete history entries older than PRESENCE_HISTORY_RETENTION_DAYS."""
    return history.prune()


@shared_task(name="presence.tasks.play_demo_colleagues", ignore_result=True)
def play_demo_colleagues() -> int:
    """Keep the demo organization's colleagues present (only scheduled with DEMO_COLLEAGUES)."""
    return demo.play_demo_colleagues()
