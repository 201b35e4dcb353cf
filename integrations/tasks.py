"""Celery tasks of the integrations: thin wrappers around `dispatch` and `importer`."""

from __future__ import annotations

import logging

from celery import shared_task

from integrations import dispatch, importer
from integrations.models import MicrosoftTenant

logger = logging.getLogger(__name__)


@shared_task(name="integrations.tasks.plan_dispatch", ignore_result=True)
def plan_dispatch(changes: list[dict]) -> int:
    """Record what each changed user should show on Matrix / Teams, and schedule deliveries."""
    return len(dispatch.plan(changes))


@shared_task(name="integrations.tasks.deliver_presence", ignore_result=True)
def deliver_presence(user_id: int, target: str, refresh: bool = False) -> bool:
    """Send one user's newest state to one target; retries schedule this task again."""
    return dispatch.deliver(user_id, target, refresh).sent


@shared_task(name="integrations.tasks.refresh_published_presence", ignore_result=True)
def refresh_published_presence() -> int:
    """Keep published presence alive (Matrix decay, Graph session expiry) and resume lost deliveries."""
    return dispatch.refresh_published()


@shared_task(name="integrations.tasks.import_microsoft_presence", ignore_result=True)
def import_microsoft_presence() -> int:
    """One import task per enabled Microsoft tenant."""
    tenants = importer.tenants_to_import()
    for organization_id in tenants:
        import_tenant_presence.delay(organization_id)
    return len(tenants)


@shared_task(name="integrations.tasks.import_tenant_presence", ignore_result=True)
def import_tenant_presence(organization_id: int) -> int:
    tenant = MicrosoftTenant.objects.select_related("organization__policy").filter(pk=organization_id).first()
    if tenant is None:
        return 0
    outcome = importer.import_tenant(tenant)
    if outcome.error:
        logger.warning("Microsoft presence import of %s: %s", tenant, outcome.error)
    return outcome.imported
