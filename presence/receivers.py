"""Changes made outside presence (an organization's policy, a membership) that change presence."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from orgs.models import Membership, PresencePolicy


@receiver(post_save, sender=PresencePolicy)
def recompute_after_policy_change(sender, instance: PresencePolicy, **kwargs) -> None:
    from presence.tasks import recompute_organization

    organization_id = instance.organization_id
    transaction.on_commit(lambda: recompute_organization.delay(organization_id))


@receiver(post_save, sender=Membership)
@receiver(post_delete, sender=Membership)
def recompute_after_membership_change(sender, instance: Membership, **kwargs) -> None:
    from presence.tasks import recompute_user

    user_id = instance.user_id
    transaction.on_commit(lambda: recompute_user.delay(user_id))
