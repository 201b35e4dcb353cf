"""GET /api/v1/peers and /api/v1/peers/{user_id}: colleagues of my organization, and what I may see of them."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from orgs.models import Membership, User
from presence import selectors
from presence.models import PresenceState
from presence.serializers import MAX_PEER_QUERY_LENGTH
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

PEER_KEYS = {
    "user_id", "display_name", "status", "activity", "status_msg", "last_active_ago", "currently_active", "status_until"
}  # fmt: skip


def _register_device(client, installation_id: str = "install-1") -> None:
    response = client.post("/api/v1/devices", {"installation_id": installation_id}, format="json")
    assert response.status_code in (200, 201), response.content


def _peer_ids(body: dict) -> list[str]:
    return [peer["user_id"] for peer in body["results"]]


def test_peers_lists_colleagues_of_my_organization_only(api_for, alice, bob, carol):
    response = api_for(alice).get("/api/v1/peers")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    assert _peer_ids(body) == [str(bob.public_id)]


def test_peer_shows_only_the_public_fields(api_for, alice, bob):
    bob_api = api_for(bob)
    _register_device(bob_api)
    bob_api.put("/api/v1/me/status", {"status": "dnd", "message": "focus"}, format="json")

    [peer] = api_for(alice).get("/api/v1/peers").json()["results"]

    assert set(peer) == PEER_KEYS
    assert peer["display_name"] == bob.display_name


def test_peer_shows_a_colleagues_live_manual_status(api_for, alice, bob):
    bob_api = api_for(bob)
    _register_device(bob_api)
    response = bob_api.put("/api/v1/me/status", {"status": "busy", "message": "release"}, format="json")
    assert response.status_code == 200

    [peer] = api_for(alice).get("/api/v1/peers").json()["results"]

    assert peer["user_id"] == str(bob.public_id)
    assert peer["status"] == "busy"
    assert peer["activity"] == "busy"
    assert peer["status_msg"] == "release"


def test_peer_with_an_active_device_is_available_and_currently_active(api_for, alice, bob):
    _register_device(api_for(bob))

    [peer] = api_for(alice).get("/api/v1/peers").json()["results"]

    assert peer["status"] == "available"
    assert peer["status_msg"] is None
    assert peer["currently_active"] is True
    assert 0 <= peer["last_active_ago"] < 60_000


def test_peer_whose_device_went_stale_is_offline_at_read_time_without_a_sweep(api_for, alice, bob):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        _register_device(api_for(bob))
    assert PresenceState.objects.get(user=bob).status == "available"

    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        [peer] = api_for(alice).get("/api/v1/peers").json()["results"]

    assert peer["status"] == "offline"
    assert peer["activity"] == "offline"
    assert peer["currently_active"] is False
    assert peer["last_active_ago"] == 10 * 60 * 1000


def test_peer_detail_of_a_stale_colleague_is_offline_at_read_time(api_for, alice, bob):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        _register_device(api_for(bob))

    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        response = api_for(alice).get(f"/api/v1/peers/{bob.public_id}")

    assert response.json()["status"] == "offline"


def test_peer_without_any_presence_yet_is_offline(api_for, alice, bob):
    [peer] = api_for(alice).get("/api/v1/peers").json()["results"]

    assert peer["status"] == "offline"
    assert peer["last_active_ago"] is None
    assert peer["currently_active"] is False


def test_peers_are_paginated_with_limit_and_offset(api_for, alice, make_member):
    colleagues = [make_member(name) for name in ("bob", "dave", "erin", "frank")]

    response = api_for(alice).get("/api/v1/peers?limit=2&offset=1")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 4
    assert _peer_ids(body) == [str(colleagues[1].public_id), str(colleagues[2].public_id)]
    assert "limit=2" in body["next"] and "offset=3" in body["next"]
    assert body["previous"] is not None and "limit=2" in body["previous"]


def test_peers_last_page_has_no_next(api_for, alice, make_member):
    for name in ("bob", "dave", "erin"):
        make_member(name)

    body = api_for(alice).get("/api/v1/peers?limit=2&offset=2").json()

    assert body["count"] == 3
    assert len(body["results"]) == 1
    assert body["next"] is None


def test_peers_limit_is_capped_at_500(api_for, alice, organization):
    now = timezone.now()
    users = User.objects.bulk_create(User(username=f"peer{i:04d}", password="!") for i in range(501))
    Membership.objects.bulk_create(Membership(user=user, organization=organization) for user in users)
    PresenceState.objects.bulk_create(PresenceState(user=user, changed_at=now, computed_at=now) for user in users)

    body = api_for(alice).get("/api/v1/peers?limit=1000").json()

    assert body["count"] == 501
    assert len(body["results"]) == 500
    assert "limit=500" in body["next"] and "offset=500" in body["next"]


def test_peer_detail_of_a_colleague_has_the_peer_shape(api_for, alice, bob):
    _register_device(api_for(bob))

    response = api_for(alice).get(f"/api/v1/peers/{bob.public_id}")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == PEER_KEYS
    assert body["user_id"] == str(bob.public_id)
    assert body["status"] == "available"


def test_peer_detail_of_someone_in_another_organization_is_404(api_for, alice, carol):
    response = api_for(alice).get(f"/api/v1/peers/{carol.public_id}")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_peer_detail_of_an_unknown_uuid_is_404(api_for, alice):
    response = api_for(alice).get(f"/api/v1/peers/{uuid.uuid4()}")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("user_id", ["not-a-uuid", "1", "12345678-1234-1234-1234-12345678901z"])
def test_peer_detail_of_a_non_uuid_is_a_json_404(api_for, alice, user_id):
    response = api_for(alice).get(f"/api/v1/peers/{user_id}")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "not_found"


def test_user_without_membership_sees_no_peers(api_for, alice, bob):
    loner = User.objects.create_user(username="loner", password="x")

    response = api_for(loner).get("/api/v1/peers")

    assert response.status_code == 200
    assert response.json()["count"] == 0
    assert response.json()["results"] == []


def test_user_without_membership_cannot_look_up_anyone(api_for, alice):
    loner = User.objects.create_user(username="loner", password="x")

    response = api_for(loner).get(f"/api/v1/peers/{alice.public_id}")

    assert response.status_code == 404


def test_inactive_colleagues_are_not_listed(api_for, alice, bob, make_member):
    dave = make_member("dave")
    User.objects.filter(pk=bob.pk).update(is_active=False)

    body = api_for(alice).get("/api/v1/peers").json()

    assert _peer_ids(body) == [str(dave.public_id)]


def test_inactive_colleague_detail_is_404(api_for, alice, bob):
    User.objects.filter(pk=bob.pk).update(is_active=False)

    response = api_for(alice).get(f"/api/v1/peers/{bob.public_id}")

    assert response.status_code == 404


def test_peers_require_authentication(api_for):
    response = api_for(None).get("/api/v1/peers")

    assert response.status_code == 401


@time_machine.travel("2026-11-25T09:00:00Z", tick=False)
def test_colleagues_see_until_when_a_status_lasts(api_for, alice, bob):
    bob_api = api_for(bob)
    _register_device(bob_api)
    response = bob_api.put("/api/v1/me/status", {"status": "busy", "duration_seconds": 5400}, format="json")
    assert response.json()["status_until"] == "2026-11-25T10:30:00Z"

    [peer] = api_for(alice).get("/api/v1/peers").json()["results"]
    detail = api_for(alice).get(f"/api/v1/peers/{bob.public_id}").json()

    assert (peer["status"], peer["status_until"]) == ("busy", "2026-11-25T10:30:00Z")
    assert detail["status_until"] == "2026-11-25T10:30:00Z"


@time_machine.travel("2026-11-25T09:00:00Z", tick=False)
def test_a_calendar_busy_time_shows_its_end_and_a_plain_status_none(api_for, alice, bob):
    bob_api = api_for(bob)
    _register_device(bob_api)
    blocks = [
        {"start": "2026-11-25T08:30:00Z", "end": "2026-11-25T09:30:00Z"},
        {"start": "2026-11-25T09:30:00Z", "end": "2026-11-25T10:00:00Z"},
    ]
    assert bob_api.put("/api/v1/me/calendar", {"blocks": blocks}, format="json").status_code == 200

    [busy] = api_for(alice).get("/api/v1/peers").json()["results"]
    assert (busy["status"], busy["status_until"]) == ("busy", "2026-11-25T10:00:00Z")

    assert bob_api.put("/api/v1/me/calendar", {"blocks": []}, format="json").status_code == 200
    [available] = api_for(alice).get("/api/v1/peers").json()["results"]
    assert (available["status"], available["status_until"]) == ("available", None)


# --- Searching: ?q= ---------------------------------------------------------------------------


@pytest.fixture
def named(organization):
    """A member of an organization with a name and an e-mail address of one's own."""

    def make(username: str, first: str = "", last: str = "", email: str = "", org=None) -> User:
        user = UserFactory(username=username, first_name=first, last_name=last, email=email)
        MembershipFactory(user=user, organization=org or organization)
        return user

    return make


def _search(client, q: str, **params) -> dict:
    response = client.get("/api/v1/peers", {"q": q, **params})
    assert response.status_code == 200, response.content
    return response.json()


def test_search_finds_a_colleague_by_part_of_the_name_in_any_case(api_for, alice, named):
    ada = named("alovelace", "Ada", "Lovelace", "ada.l@example.test")
    named("ghopper", "Grace", "Hopper", "grace@example.test")

    for q in ("LOVE", "ada", "ada lovelace", "  Ada   LoveLace ", "ovela"):
        assert _peer_ids(_search(api_for(alice), q)) == [str(ada.public_id)], q


def test_search_finds_by_username_and_by_the_e_mail_address_before_its_at(api_for, alice, named):
    ada = named("u1234", "Ada", "Lovelace", "countess@analytical.test")
    named("u5678", "Grace", "Hopper", "grace@analytical.test")

    assert _peer_ids(_search(api_for(alice), "U12")) == [str(ada.public_id)]
    assert _peer_ids(_search(api_for(alice), "countess")) == [str(ada.public_id)]
    # The part after the @ is the organization's domain, which every colleague shares: no clue.
    assert _search(api_for(alice), "analytical")["count"] == 0


def test_search_finds_a_colleague_without_a_name_by_the_username_shown(api_for, alice, named):
    nameless = named("zed")

    assert _peer_ids(_search(api_for(alice), "ZE")) == [str(nameless.public_id)]


def test_search_results_are_paged(api_for, alice, named):
    found = [named(f"smith{i}", "Pat", f"Smith {i}") for i in range(5)]
    named("jones", "Pat", "Jones")

    body = _search(api_for(alice), "smith", limit=2, offset=2)

    assert body["count"] == 5
    assert _peer_ids(body) == [str(user.public_id) for user in found[2:4]]
    assert "q=smith" in body["next"] and "offset=4" in body["next"]
    assert "q=smith" in body["previous"]
    last = api_for(alice).get(body["next"]).json()
    assert _peer_ids(last) == [str(found[4].public_id)] and last["next"] is None


@pytest.mark.parametrize("q", ["", "   "])
def test_an_empty_search_lists_everyone(api_for, alice, bob, named, q):
    dave = named("dave", "Dave", "Doe")

    body = _search(api_for(alice), q)

    assert body["count"] == 2
    assert _peer_ids(body) == [str(bob.public_id), str(dave.public_id)]


def test_search_never_finds_members_of_another_organization(api_for, alice, named, other_organization):
    named("alovelace", "Ada", "Lovelace", "ada@example.test")
    stranger = named("ada-elsewhere", "Ada", "Stranger", "ada@acme.test", org=other_organization)

    for q in ("ada", "stranger", "elsewhere", "acme"):
        assert str(stranger.public_id) not in _peer_ids(_search(api_for(alice), q)), q
    assert _search(api_for(alice), "stranger")["count"] == 0


def test_search_never_finds_myself(api_for, alice):
    assert _search(api_for(alice), "alice")["count"] == 0


def test_a_search_too_long_is_a_400_naming_q(api_for, alice):
    assert _search(api_for(alice), "a" * MAX_PEER_QUERY_LENGTH)["count"] == 0

    response = api_for(alice).get("/api/v1/peers", {"q": "a" * (MAX_PEER_QUERY_LENGTH + 1)})

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "validation_error"
    assert set(body["fields"]) == {"q"}, body["fields"]


@pytest.mark.parametrize("query_string", ["q=%00", "q=ada%00", "q=%00%00&limit=2"])
def test_a_search_with_nul_is_a_400_naming_q(api_for, alice, named, query_string):
    named("alovelace", "Ada", "Lovelace")

    response = api_for(alice).get(f"/api/v1/peers?{query_string}")

    assert response.status_code == 400, response.content
    assert response.json()["error"] == "validation_error"
    assert set(response.json()["fields"]) == {"q"}


@pytest.mark.parametrize(
    "q", ["%", "_", "\\", "'", '"', "a%e", "l_v", "😀", "\u202e", "\x01\x1f", "\ufffd", "Ä", "(.*)", "[a-z]"]
)
def test_odd_characters_in_a_search_are_taken_literally(api_for, alice, named, q):
    named("alovelace", "Ada", "Lovelace")

    body = _search(api_for(alice), q)

    assert body["count"] == 0, body


def test_odd_characters_find_a_name_that_holds_them(api_for, alice, named):
    percent = named("pct", "100%", "Sure")
    underscore = named("under_score")
    named("underxscore")
    umlaut = named("jk", "Jürgen", "Ärmel")

    assert _peer_ids(_search(api_for(alice), "0%")) == [str(percent.public_id)]
    assert _peer_ids(_search(api_for(alice), "r_s")) == [str(underscore.public_id)]
    assert _peer_ids(_search(api_for(alice), "ärmel")) == [str(umlaut.public_id)]


def test_an_invalid_utf_8_search_is_no_error(api_for, alice, named):
    named("alovelace", "Ada", "Lovelace")

    response = api_for(alice).get("/api/v1/peers?q=%ED%A0%80%FF")

    assert response.status_code == 200
    assert response.json()["count"] == 0


def test_the_selector_finds_nobody_for_a_query_no_name_can_hold(alice, named):
    named("alovelace", "Ada", "Lovelace")

    assert list(selectors.colleagues_of(alice, query="ada\x00")) == []
    assert list(selectors.colleagues_of(alice, query="ada\ud800")) == []
    assert [user.username for user in selectors.colleagues_of(alice, query="ADA")] == ["alovelace"]
