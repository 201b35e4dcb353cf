"""Celery tasks of the integrations: thin wrappers around `dispatch` and `importer`, run by beat.

The steps dispatch enqueues itself (`plan_dispatch`, `deliver_presence`) are tasks of
`integrations.dispatch`, registered wherever this module is (it imports dispatch)."""

from __future__ import annotations

import logging

from celery import shared_task

from integrations import dispatch, importer
from integrations.models import MicrosoftTenant

logger = logging.getLogger(__name__)


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
