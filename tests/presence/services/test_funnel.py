"""The funnel every decision leaves through: it stores a decision only over the one it was decided
against, keeps the locked row in step, and publishes a change exactly when colleagues see one."""

from __future__ import annotations

from dataclasses import replace

import pytest

from presence import decisions, events, hot, services
from presence.models import PresenceState
from presence.services import funnel
from presence.vocabulary import Reason, Status

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(monkeypatch) -> list:
    """The changes handed to the one exit (`events.publish_many`), batch by batch."""
    batches: list = []
    monkeypatch.setattr(events, "publish_many", lambda changes, *args, **kwargs: batches.append(list(changes)))
    return batches


@pytest.fixture
def available(alice):
    """Alice with a live device: available, in the hot store and in her row."""
    services.register_device(alice, "laptop")
    return hot.HotUser.parse(hot.store().read(alice.pk))


def commit_for(user, hot_user, after, row=None, **changes) -> funnel.Commit:
    return funnel.Commit(
        user.pk,
        user.public_id,
        user.membership.organization_id,
        hot_user.decision,
        after,
        "test",
        hot_user.version,
        row=row,
        **changes,
    )


def stored_decision(user) -> hot.HotDecision:
    return hot.HotUser.parse(hot.store().read(user.pk)).decision


def test_a_visible_change_is_stored_and_published_once_when_the_transaction_commits(
    alice, available, published, django_capture_on_commit_callbacks
):
    busy = replace(available.decision, status=Status.BUSY.value, reason=Reason.MANUAL_STATUS.value)
    row = PresenceState.objects.get(user=alice)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert funnel.commit([commit_for(alice, available, busy, row)]) == [True]
        assert published == []  # not before the commit

    assert len(callbacks) == 1
    assert [(c.user_id, c.status, c.source) for batch in published for c in batch] == [
        (str(alice.public_id), "busy", "test")
    ]
    assert stored_decision(alice) == busy
    assert decisions.of_row(PresenceState.objects.get(user=alice)) == busy


def test_a_decision_against_an_outdated_version_is_refused_and_changes_nothing(
    alice, available, published, django_capture_on_commit_callbacks
):
    busy = replace(available.decision, status=Status.BUSY.value)
    outdated = replace(commit_for(alice, available, busy), expected_version=available.version - 1)

    with django_capture_on_commit_callbacks(execute=True):
        assert funnel.commit([outdated]) == [False]

    assert published == []
    assert stored_decision(alice) == available.decision


def test_a_new_reason_alone_is_stored_in_the_row_and_published_to_nobody(
    alice, available, published, django_capture_on_commit_callbacks
):
    row = PresenceState.objects.get(user=alice)
    changed_at = row.changed_at
    reason_only = replace(available.decision, reason=Reason.MANUAL_STATUS.value)

    with django_capture_on_commit_callbacks(execute=True):
        assert funnel.commit([commit_for(alice, available, reason_only, row)]) == [True]

    assert published == []
    stored = PresenceState.objects.get(user=alice)
    assert stored.reason == Reason.MANUAL_STATUS
    assert stored.changed_at == changed_at  # nothing anyone sees changed


def test_a_decision_colleagues_see_no_differently_needs_no_database(
    alice, available, published, django_assert_num_queries
):
    later = replace(available.decision, valid_until=available.decision.valid_until + 30)

    with django_assert_num_queries(0):
        assert funnel.commit([commit_for(alice, available, later)]) == [True]

    assert published == []
    assert stored_decision(alice) == later


def test_a_first_decision_is_news_even_when_it_shows_offline(alice, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.recompute(alice)

    assert [(c.user_id, c.status) for batch in published for c in batch] == [(str(alice.public_id), "offline")]


def test_each_commit_of_a_batch_is_judged_on_its_own(
    alice, bob, available, published, django_capture_on_commit_callbacks
):
    services.register_device(bob, "phone")
    bob_hot = hot.HotUser.parse(hot.store().read(bob.pk))
    away = replace(available.decision, status=Status.AWAY.value, activity="inactive", currently_active=False)
    stale_bob = replace(commit_for(bob, bob_hot, away), expected_version=bob_hot.version + 5)

    with django_capture_on_commit_callbacks(execute=True):
        results = funnel.commit([commit_for(alice, available, away), stale_bob])

    assert results == [True, False]
    assert [(c.user_id, c.status) for batch in published for c in batch] == [(str(alice.public_id), "away")]
    assert stored_decision(bob) == bob_hot.decision
