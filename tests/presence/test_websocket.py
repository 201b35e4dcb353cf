"""The presence websocket `/ws/presence/`, in process, on the real (Redis) channel layer."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from datetime import timedelta

import pytest
import time_machine
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone

from orgs.models import Membership, User
from presence import consumers, hot, live, services
from sparks_site.asgi import application
from tests.presence.live_helpers import register_device, settle, token_of
from tests.presence.socket_helpers import PATH, is_delta_of, peers_of, receive_until, rest, run, snapshot, socket

# Changes are published when their transaction commits: these tests need real commits.
pytestmark = pytest.mark.django_db(transaction=True)

QUIET_SECONDS = 0.5
PEER_KEYS = {
    "user_id", "display_name", "status", "activity", "status_msg", "last_active_ago", "currently_active", "status_until"
}  # fmt: skip
DELTA_KEYS = {
    "type", "user_id", "status", "activity", "status_msg", "currently_active", "last_active_ago", "status_until"
}  # fmt: skip


@pytest.fixture
def bob_device(bob) -> str:
    return register_device(bob, "bob-laptop")


def session_cookie(user: User) -> tuple[bytes, bytes]:
    client = Client()
    # As stored: the factory's password is not saved, and the session is bound to the stored one.
    client.force_login(User.objects.get(pk=user.pk))
    name = django_settings.SESSION_COOKIE_NAME
    return b"cookie", f"{name}={client.cookies[name].value}".encode()


async def close_code(communicator: WebsocketCommunicator) -> int:
    output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close", output
    return output["code"]


async def refused_with(*, path: str = PATH, headers=None, subprotocols=None) -> int:
    communicator = WebsocketCommunicator(application, path, headers=headers, subprotocols=subprotocols)
    connected, _ = await communicator.connect(timeout=5)
    assert connected  # accepted, so that the client sees the close code
    code = await close_code(communicator)
    # The consumer is done at once; only the channel layer's cancelled Redis read lingers (~1 s with
    # redis-py 8), which the harness would otherwise wait out on every refusal.
    await communicator.disconnect(timeout=0.1)
    return code


def test_waiting_on_the_channel_layer_outlasts_redis_read_timeouts():
    """A hub waits on the layer for hours; a read timeout of its Redis connection (redis-py's
    5 s) must not end the wait with an error ("Timeout reading from …": sockets closed 1011)."""

    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add("idle", channel)
        with pytest.raises(TimeoutError):  # the wait's own, not redis.exceptions.TimeoutError
            await asyncio.wait_for(layer.receive(channel), 6)

    run(scenario)


# --- Signing in ---------------------------------------------------------------------------------


def test_the_session_cookie_signs_in_and_the_snapshot_is_the_organizations_colleagues(
    api_for, alice, bob, carol, bob_device
):
    cookie = session_cookie(alice)
    alice_device = register_device(alice)
    api_for(bob).put("/api/v1/me/status", {"status": "busy", "message": "release"}, format="json")
    settle(alice, bob, carol)
    rest_peer = api_for(alice).get("/api/v1/peers").json()["results"][0]

    async def scenario():
        async with socket(headers=[cookie]) as ws:
            peers = await peers_of(ws)
            assert set(peers) == {str(bob.public_id)}
            peer = peers[str(bob.public_id)]
            assert set(peer) == PEER_KEYS
            assert {k: v for k, v in peer.items() if k != "last_active_ago"} == {
                k: v for k, v in rest_peer.items() if k != "last_active_ago"
            }
            assert (peer["status"], peer["status_msg"]) == ("busy", "release")

            # The session's user also reports signals.
            signals = [{"type": "heartbeat", "seq": 1}]
            await ws.send_json_to({"type": "signals", "device_id": alice_device, "signals": signals})
            ack = await receive_until(ws, lambda m: m["type"] != "presence")
            assert (ack["type"], ack["signals_applied"]) == ("ack", 1)

    run(scenario)


def test_a_token_in_the_query_signs_in(alice, bob):
    async def scenario():
        async with socket(alice) as ws:
            assert set(await peers_of(ws)) == {str(bob.public_id)}

    run(scenario)


def test_a_token_subprotocol_signs_in_and_the_presence_protocol_is_selected(alice, bob):
    key = token_of(alice)

    async def scenario():
        for offered, selected in [
            (["sparks.presence.v1", f"token.{key}"], "sparks.presence.v1"),
            ([f"token.{key}"], f"token.{key}"),  # a browser needs one of its offers answered
        ]:
            communicator = WebsocketCommunicator(application, PATH, subprotocols=offered)
            assert await communicator.connect(timeout=5) == (True, selected)
            assert set(await peers_of(communicator)) == {str(bob.public_id)}
            await communicator.disconnect()

    run(scenario)


def test_without_valid_credentials_the_socket_is_closed_4401(alice):
    cookie = session_cookie(alice)

    async def scenario():
        assert await refused_with() == 4401
        assert await refused_with(path=f"{PATH}?token=not-a-token") == 4401
        assert await refused_with(subprotocols=["sparks.presence.v1", "token.not-a-token"]) == 4401
        # An explicit wrong token is an error, not a fallback to the session.
        assert await refused_with(path=f"{PATH}?token=not-a-token", headers=[cookie]) == 4401

    run(scenario)


def test_a_token_decides_over_another_users_session(alice, bob):
    cookie = session_cookie(bob)

    async def scenario():
        async with socket(alice, headers=[cookie]) as ws:
            return set(await peers_of(ws))

    assert run(scenario) == {str(bob.public_id)}  # Alice's colleagues, not Bob's


def test_sockets_signing_in_at_once_are_each_their_own_tokens_user(make_member):
    members = [make_member(f"member-{n:02d}") for n in range(12)]
    everyone = {str(member.public_id) for member in members}

    async def scenario():
        async with AsyncExitStack() as stack:
            opened = [stack.enter_async_context(socket(member)) for member in members]
            sockets, refused = await asyncio.gather(
                asyncio.gather(*opened), refused_with(path=f"{PATH}?token=not-a-token")
            )
            return [set(await peers_of(ws)) for ws in sockets], refused

    seen, refused = run(scenario)
    assert seen == [everyone - {str(member.public_id)} for member in members]
    assert refused == 4401


def test_an_inactive_users_token_is_refused(alice):
    key = token_of(alice)
    User.objects.filter(pk=alice.pk).update(is_active=False)

    async def scenario():
        assert await refused_with(path=f"{PATH}?token={key}") == 4401

    run(scenario)


def test_the_session_counts_only_from_the_sites_own_origin(alice):
    cookie = session_cookie(alice)
    host = (b"host", b"presence.example.test")

    async def scenario():
        foreign = [cookie, host, (b"origin", b"https://evil.example")]
        assert await refused_with(headers=foreign) == 4401
        async with socket(headers=[cookie, host, (b"origin", b"https://presence.example.test")]) as ws:
            await snapshot(ws)

    run(scenario)


def test_a_user_in_no_organization_is_closed_4403(alice):
    Membership.objects.filter(user=alice).delete()
    key = token_of(alice)

    async def scenario():
        assert await refused_with(path=f"{PATH}?token={key}") == 4403

    run(scenario)


def test_classic_mode_closes_4409(settings, alice):
    settings.PRESENCE_USE_AGGREGATOR = False
    key = token_of(alice)

    async def scenario():
        assert await refused_with(path=f"{PATH}?token={key}") == 4409

    run(scenario)


# --- The snapshot -------------------------------------------------------------------------------


def test_the_snapshot_comes_in_pages_of_at_most_500(alice, organization):
    users = User.objects.bulk_create(User(username=f"peer-{i:04d}", password="!") for i in range(501))
    Membership.objects.bulk_create(Membership(user=user, organization=organization) for user in users)

    async def scenario():
        async with socket(alice) as ws:
            pages = await snapshot(ws)

        assert [(page["page"], len(page["peers"]), page["last"]) for page in pages] == [(1, 500, False), (2, 1, True)]
        ids = [peer["user_id"] for page in pages for peer in page["peers"]]
        assert sorted(ids) == sorted(str(user.public_id) for user in users)

    run(scenario)


def test_a_user_without_colleagues_gets_one_empty_page(alice):
    async def scenario():
        async with socket(alice) as ws:
            assert await snapshot(ws) == [{"type": "snapshot", "peers": [], "page": 1, "last": True}]

    run(scenario)


# --- Deltas -------------------------------------------------------------------------------------


def test_a_colleagues_change_arrives_as_a_delta(api_for, alice, bob, bob_device):
    settle(alice, bob)
    bob_api = api_for(bob)

    async def scenario():
        async with socket(alice) as ws:
            await snapshot(ws)
            response = await rest(bob_api, "put", "/api/v1/me/status", {"status": "dnd", "message": "focus"})
            assert response.status_code == 200

            delta = await receive_until(ws, is_delta_of(bob))

        assert set(delta) == DELTA_KEYS
        assert (delta["status"], delta["activity"], delta["status_msg"]) == ("dnd", "do_not_disturb", "focus")

    run(scenario)


def test_a_delta_carries_the_visible_presence_and_how_long_ago_the_user_was_active(api_for, alice, bob):
    settle(alice, bob)
    bob_api = api_for(bob)

    async def scenario():
        async with socket(alice) as ws:
            await snapshot(ws)
            response = await rest(bob_api, "post", "/api/v1/devices", {"installation_id": "bob-laptop"})
            assert response.status_code == 201

            delta = await receive_until(ws, is_delta_of(bob))

        assert delta["status"] == "available"
        assert delta["activity"] == "available"
        assert delta["status_msg"] is None
        assert delta["currently_active"] is True
        assert 0 <= delta["last_active_ago"] < 60_000

    run(scenario)


def test_no_delta_comes_from_another_organization(api_for, alice, bob, carol):
    settle(alice, bob, carol)
    carol_api, bob_api = api_for(carol), api_for(bob)

    async def scenario():
        async with socket(alice) as ws:
            await snapshot(ws)
            assert (await rest(carol_api, "post", "/api/v1/devices", {"installation_id": "c"})).status_code == 201
            assert await ws.receive_nothing(QUIET_SECONDS)
            # Alive all along: a colleague's change still arrives, and it is the first thing that does.
            assert (await rest(bob_api, "post", "/api/v1/devices", {"installation_id": "b"})).status_code == 201
            delta = await ws.receive_json_from(5)

        assert (delta["type"], delta["user_id"]) == ("presence", str(bob.public_id))

    run(scenario)


def test_a_subscription_restricts_the_deltas_and_starts_with_its_own_snapshot(api_for, alice, bob, make_member):
    dave = make_member("dave")
    settle(alice, bob, dave)
    bob_api, dave_api = api_for(bob), api_for(dave)

    async def scenario():
        async with socket(alice) as ws:
            assert set(await peers_of(ws)) == {str(bob.public_id), str(dave.public_id)}

            await ws.send_json_to({"type": "subscribe", "user_ids": [str(bob.public_id)]})
            assert set(await peers_of(ws)) == {str(bob.public_id)}

            assert (await rest(dave_api, "post", "/api/v1/devices", {"installation_id": "d"})).status_code == 201
            assert await ws.receive_nothing(QUIET_SECONDS)
            assert (await rest(bob_api, "post", "/api/v1/devices", {"installation_id": "b"})).status_code == 201
            delta = await ws.receive_json_from(5)
            assert delta["user_id"] == str(bob.public_id)

            # null: the whole organization again.
            await ws.send_json_to({"type": "subscribe", "user_ids": None})
            assert set(await peers_of(ws)) == {str(bob.public_id), str(dave.public_id)}

    run(scenario)


@pytest.mark.parametrize("whom", ["other_organization", "unknown"])
def test_subscribing_to_someone_not_a_colleague_closes_4403(alice, bob, carol, whom):
    target = str(carol.public_id) if whom == "other_organization" else str(uuid.uuid4())

    async def scenario():
        async with socket(alice) as ws:
            await snapshot(ws)
            await ws.send_json_to({"type": "subscribe", "user_ids": [str(bob.public_id), target]})
            assert await close_code(ws) == 4403

    run(scenario)


def test_a_malformed_subscription_is_an_error_and_the_socket_stays(alice, bob):
    async def scenario():
        async with socket(alice) as ws:
            await snapshot(ws)
            await ws.send_json_to({"type": "subscribe", "user_ids": ["not-a-uuid"], "id": 7})
            error = await ws.receive_json_from()
            assert error["type"] == "error"
            assert error["id"] == 7
            assert error["error"] == "validation_error"
            assert set(error["fields"]) == {"user_ids.0"}

            await ws.send_json_to({"type": "subscribe", "user_ids": [str(bob.public_id)]})
            assert set(await peers_of(ws)) == {str(bob.public_id)}

    run(scenario)


# --- Signals over the socket --------------------------------------------------------------------


def test_signals_over_the_socket_are_acknowledged_with_presence_and_colleagues_see_the_change(alice, bob, bob_device):
    settle(alice, bob)

    async def scenario():
        async with socket(alice) as alice_ws, socket(bob) as bob_ws:
            await snapshot(alice_ws)
            await snapshot(bob_ws)
            await bob_ws.send_json_to(
                {
                    "type": "signals",
                    "id": "r1",
                    "device_id": bob_device,
                    "signals": [{"type": "call", "value": "start", "seq": 1}],
                }
            )
            ack = await receive_until(bob_ws, lambda m: m["type"] == "ack")
            delta = await receive_until(alice_ws, is_delta_of(bob))

        assert ack["id"] == "r1"
        assert (ack["status"], ack["activity"], ack["reason"]) == ("busy", "in_call", "in_call")
        assert (ack["signals_applied"], ack["signals_ignored"]) == (1, 0)
        assert set(ack) == {
            "type", "id", "status", "activity", "status_msg", "last_active", "last_active_ago",
            "currently_active", "reason", "status_until", "signals_applied", "signals_ignored",
        }  # fmt: skip
        assert (delta["status"], delta["activity"]) == ("busy", "in_call")

    run(scenario)


def test_invalid_signals_are_refused_naming_the_field(bob, bob_device):
    async def scenario():
        async with socket(bob) as ws:
            await snapshot(ws)
            await ws.send_json_to(
                {
                    "type": "signals",
                    "id": 3,
                    "device_id": bob_device,
                    "signals": [{"type": "visibility", "value": "maybe", "seq": 1, "colour": "red"}],
                    "extra": True,
                }
            )
            assert await ws.receive_json_from() == {
                "type": "error",
                "id": 3,
                "error": "validation_error",
                "detail": "Invalid input.",
                "fields": {"signals.0.colour": ["Unknown field."], "extra": ["Unknown field."]},
            }

            await ws.send_json_to(
                {
                    "type": "signals",
                    "device_id": bob_device,
                    "signals": [{"type": "heartbeat", "seq": 1}, {"type": "visibility", "value": "maybe", "seq": 2}],
                }
            )
            error = await ws.receive_json_from()
            assert error["id"] is None
            assert error["fields"] == {"signals.1.value": ["A visibility signal takes one of: hidden, visible."]}

            await ws.send_json_to({"type": "signals", "signals": [{"type": "heartbeat", "seq": 1}]})
            error = await ws.receive_json_from()
            assert error["fields"] == {"device_id": ["This field is required."]}

    run(scenario)


def test_a_signal_not_newer_than_the_last_applied_is_ignored(bob, bob_device):
    def batch(seq: int) -> dict:
        return {"type": "signals", "device_id": bob_device, "signals": [{"type": "heartbeat", "seq": seq}]}

    async def scenario():
        async with socket(bob) as ws:
            await snapshot(ws)
            await ws.send_json_to(batch(5))
            first = await receive_until(ws, lambda m: m["type"] == "ack")
            await ws.send_json_to(batch(3))
            second = await receive_until(ws, lambda m: m["type"] == "ack")

        assert (first["signals_applied"], first["signals_ignored"]) == (1, 0)
        assert (second["signals_applied"], second["signals_ignored"]) == (0, 1)
        assert second["status"] == "available"

    run(scenario)


def test_another_users_device_is_not_found(alice, bob_device):
    async def scenario():
        async with socket(alice) as ws:
            await snapshot(ws)
            await ws.send_json_to(
                {"type": "signals", "id": "x", "device_id": bob_device, "signals": [{"type": "heartbeat", "seq": 1}]}
            )
            error = await ws.receive_json_from()

        assert error == {"type": "error", "id": "x", "error": "not_found", "detail": "No such device."}

    run(scenario)


def test_a_heartbeat_that_changes_nothing_visible_sends_no_delta(alice, bob, bob_device):
    settle(alice, bob)

    async def scenario():
        async with socket(alice) as alice_ws, socket(bob) as bob_ws:
            await snapshot(alice_ws)
            await snapshot(bob_ws)
            await bob_ws.send_json_to(
                {"type": "signals", "device_id": bob_device, "signals": [{"type": "heartbeat", "seq": 1}]}
            )
            ack = await bob_ws.receive_json_from(5)
            assert (ack["type"], ack["signals_applied"]) == ("ack", 1)
            assert await alice_ws.receive_nothing(QUIET_SECONDS)

    run(scenario)


# --- Whatever a client sends, the socket answers ------------------------------------------------


def test_malformed_and_unknown_messages_are_answered_with_errors(alice, bob):
    async def scenario():
        async with socket(alice) as ws:
            await snapshot(ws)

            await ws.send_to(text_data="{not json")
            assert (await ws.receive_json_from())["error"] == "parse_error"

            await ws.send_to(bytes_data=b"\x00\x01")
            assert (await ws.receive_json_from())["error"] == "parse_error"

            await ws.send_json_to(["a", "list"])
            assert (await ws.receive_json_from())["fields"] == {"non_field_errors": ["A message is a JSON object."]}

            await ws.send_json_to({"type": "dance", "id": "d"})
            error = await ws.receive_json_from()
            assert (error["id"], error["error"]) == ("d", "validation_error")
            assert error["fields"]["type"] == ["Unknown message type; one of: signals, subscribe."]

            await ws.send_json_to({"no": "type"})
            assert (await ws.receive_json_from())["fields"] == {"type": ["This field is required."]}

            # Still serving.
            await ws.send_json_to({"type": "subscribe", "user_ids": [str(bob.public_id)]})
            assert set(await peers_of(ws)) == {str(bob.public_id)}

    run(scenario)


@pytest.mark.parametrize("device_id", ["laptop\x00", "laptop\ud800"], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize(
    "signal", [{"type": "heartbeat", "seq": 1}, {"type": "activity", "value": "idle", "seq": 1}], ids=["quick", "full"]
)
def test_a_device_id_no_device_can_have_is_not_found_rather_than_a_server_error(bob, bob_device, device_id, signal):
    async def scenario():
        async with socket(bob) as ws:
            await snapshot(ws)
            await ws.send_json_to({"type": "signals", "id": 7, "device_id": device_id, "signals": [signal]})
            return await ws.receive_json_from(5)

    assert async_to_sync(scenario)() == {"type": "error", "id": 7, "error": "not_found", "detail": "No such device."}


@pytest.mark.parametrize("message_type", ["subscribe", "signals", "dance"])
def test_a_message_id_that_is_no_string_or_integer_is_refused_whatever_the_message(alice, bob, message_type):
    async def scenario():
        async with socket(alice) as ws:
            await snapshot(ws)
            await ws.send_json_to({"type": message_type, "id": {"n": 1}, "user_ids": [str(bob.public_id)]})
            error = await ws.receive_json_from(5)
            assert await ws.receive_nothing(QUIET_SECONDS), "no snapshot follows a refused subscription"
            return error

    assert async_to_sync(scenario)() == {
        "type": "error",
        "id": None,
        "error": "validation_error",
        "detail": "Invalid input.",
        "fields": {"id": ["A string of at most 200 characters, or an integer."]},
    }


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        ({"type": 5}, {"type": ["Expected a string, got a number."]}),
        ({"type": ["signals"]}, {"type": ["Expected a string, got an array."]}),
        ({"type": "subscribe", "user_ids": [5]}, {"user_ids.0": ["Expected a string, got a number."]}),
        ({"type": "subscribe", "user_ids": {"a": 1}}, {"user_ids": ["Expected an array, got an object."]}),
        ({"type": "subscribe", "user_ids": None, "since": 0}, {"since": ["Unknown field."]}),
        (
            {"type": "signals", "device_id": "d", "signals": [{"type": "heartbeat", "seq": 1.0}]},
            {"signals.0.seq": ["Expected an integer, got a number."]},
        ),
        (
            {"type": "signals", "device_id": "d", "signals": [{"type": "activity", "value": 1, "seq": 1}]},
            {"signals.0.value": ["Expected a string, got a number."]},
        ),
    ],
    ids=["type-number", "type-array", "user-id-number", "user-ids-object", "subscribe-unknown", "seq-float", "value"],
)
def test_a_message_field_of_the_wrong_type_or_unknown_is_refused_by_name(alice, message, fields):
    async def scenario():
        async with socket(alice) as ws:
            await snapshot(ws)
            await ws.send_json_to(message)
            return await ws.receive_json_from(5)

    error = async_to_sync(scenario)()

    assert (error["type"], error["error"], error["fields"]) == ("error", "validation_error", fields)


# --- Heartbeats answered on the event loop ------------------------------------------------------


def heartbeat_message(device_id: str, seq: int, **extra) -> dict:
    return {"type": "signals", "device_id": device_id, "signals": [{"type": "heartbeat", "seq": seq}], **extra}


# The full path itself, as the consumer would call it without the quick one.
full_signals_reply = database_sync_to_async(live.signals_reply)


@pytest.fixture
def full_path_calls(monkeypatch) -> list[dict]:
    """The messages that reached the full path (`live.signals_reply`, on a thread)."""
    calls: list[dict] = []
    full = live.signals_reply

    def recorded(user, message, rate_counted=False):
        calls.append(message)
        return full(user, message, rate_counted)

    monkeypatch.setattr(live, "signals_reply", recorded)
    return calls


def test_a_steady_heartbeat_over_the_socket_needs_no_thread_and_no_database(monkeypatch, bob, bob_device):
    def no_thread(function):
        raise AssertionError(f"{function.__name__} was handed to a thread")

    async def scenario():
        async with socket(bob) as ws:
            await snapshot(ws)
            # From here on, a thread hand-off fails, and so does any ORM query (on the event loop
            # itself Django refuses them): the socket would answer either with a server_error.
            monkeypatch.setattr(consumers, "database_sync_to_async", no_thread)
            await ws.send_json_to(heartbeat_message(bob_device, 1, id=1))
            applied = await ws.receive_json_from(5)
            await ws.send_json_to(heartbeat_message(bob_device, 1, id=2))
            ignored = await ws.receive_json_from(5)
        return applied, ignored

    applied, ignored = async_to_sync(scenario)()

    assert (applied["type"], applied["id"], applied["signals_applied"], applied["signals_ignored"]) == ("ack", 1, 1, 0)
    assert (ignored["type"], ignored["id"], ignored["signals_applied"], ignored["signals_ignored"]) == ("ack", 2, 0, 1)
    assert hot.HotUser.parse(hot.store().read(bob.pk)).devices[bob_device].seq == 1


def test_the_quick_ack_is_the_ack_of_the_full_path(bob, bob_device, full_path_calls):
    async def scenario():
        async with socket(bob) as ws:
            await snapshot(ws)
            await ws.send_json_to(heartbeat_message(bob_device, 1, id="q"))
            quick = await ws.receive_json_from(5)
            await ws.send_json_to(heartbeat_message(bob_device, 1, id="q"))
            quick_ignored = await ws.receive_json_from(5)
        full = await full_signals_reply(bob, heartbeat_message(bob_device, 2, id="q"))
        full_ignored = await full_signals_reply(bob, heartbeat_message(bob_device, 2, id="q"))
        return quick, quick_ignored, full, full_ignored

    quick, quick_ignored, full, full_ignored = async_to_sync(scenario)()

    assert full_path_calls == []  # the socket answered both on the quick path
    assert (full["signals_applied"], full_ignored["signals_ignored"]) == (1, 1)
    for quick_ack, full_ack in [(quick, full), (quick_ignored, full_ignored)]:
        assert list(quick_ack) == list(full_ack)
        assert {k: v for k, v in quick_ack.items() if k != "last_active_ago"} == {
            k: v for k, v in full_ack.items() if k != "last_active_ago"
        }
        assert abs(quick_ack["last_active_ago"] - full_ack["last_active_ago"]) < 5_000


def test_a_heartbeat_that_brings_a_timed_out_device_back_takes_the_full_path(
    api_for, alice, bob, bob_device, full_path_calls
):
    settle(alice, bob)
    bob_api = api_for(bob)

    async def scenario():
        async with socket(alice) as alice_ws, socket(bob) as bob_ws:
            await snapshot(alice_ws)
            await snapshot(bob_ws)
            # Past the device timeout (120 s), not yet idle (300 s).
            with time_machine.travel(timezone.now() + timedelta(minutes=3)):
                assert (await rest(bob_api, "get", "/api/v1/me/presence")).json()["status"] == "offline"
                await database_sync_to_async(services.sweep_expired)()  # announces what the read only answered
                await receive_until(alice_ws, is_delta_of(bob, status="offline"))

                await bob_ws.send_json_to(heartbeat_message(bob_device, 1, id="back"))
                ack = await receive_until(bob_ws, lambda m: m["type"] == "ack")
                delta = await receive_until(alice_ws, is_delta_of(bob))
        return ack, delta

    ack, delta = async_to_sync(scenario)()

    assert [message["id"] for message in full_path_calls] == ["back"]
    assert (ack["id"], ack["status"], ack["signals_applied"]) == ("back", "available", 1)
    assert delta["status"] == "available"


def test_another_users_device_is_not_found_even_when_ones_own_hot_state_is_ready(alice, bob_device, full_path_calls):
    alice_device = register_device(alice)

    async def scenario():
        async with socket(alice) as ws:
            await snapshot(ws)
            await ws.send_json_to(heartbeat_message(alice_device, 1))
            assert (await ws.receive_json_from(5))["type"] == "ack"
            await ws.send_json_to(heartbeat_message(bob_device, 1, id="x"))
            return await ws.receive_json_from(5)

    error = async_to_sync(scenario)()

    assert error == {"type": "error", "id": "x", "error": "not_found", "detail": "No such device."}
    assert [message.get("id") for message in full_path_calls] == ["x"]


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"signals": [{"type": "heartbeat", "seq": -1}]}, {"signals.0.seq"}),
        ({"signals": [{"type": "heartbeat", "seq": True}]}, {"signals.0.seq"}),
        ({"signals": [{"type": "heartbeat", "seq": 2**63}]}, {"signals.0.seq"}),
        ({"signals": [{"type": "heartbeat", "seq": 2, "value": "x"}]}, {"signals.0.value"}),
        ({"signals": [{"type": "heartbeat", "seq": 2, "extra": 1}]}, {"signals.0.extra"}),
        ({"extra": 1}, {"extra"}),
        ({"device_id": ""}, {"device_id"}),
        ({"device_id": "d" * 65}, {"device_id"}),
        ({"signals": [{"type": "heartbeat", "seq": "2"}]}, {"signals.0.seq"}),
    ],
    ids=[
        "negative seq",
        "boolean seq",
        "seq too large",
        "value",
        "unknown field in signal",
        "unknown field",
        "empty device id",
        "long device id",
        "seq as a string",
    ],
)
def test_a_malformed_heartbeat_still_gets_the_full_validation(bob, bob_device, full_path_calls, change, fields):
    async def scenario():
        async with socket(bob) as ws:
            await snapshot(ws)
            await ws.send_json_to({**heartbeat_message(bob_device, 1), **change})
            return await ws.receive_json_from(5)

    error = async_to_sync(scenario)()

    assert (error["type"], error["error"]) == ("error", "validation_error")
    assert set(error["fields"]) == fields
    assert len(full_path_calls) == 1


def test_a_message_over_the_devices_limit_is_answered_with_an_error_and_the_socket_stays(bob, bob_device, settings):
    settings.PRESENCE_RATE_LIMIT_DEVICE = (2, 60.0)  # a burst of 2, then one every 30 s

    async def scenario():
        async with socket(bob) as ws:
            await snapshot(ws)
            answers = []
            for seq in (1, 2, 3):
                await ws.send_json_to(heartbeat_message(bob_device, seq, id=seq))
                answers.append(await ws.receive_json_from(5))
            change = {"type": "signals", "device_id": bob_device, "id": "idle"}
            await ws.send_json_to({**change, "signals": [{"type": "activity", "value": "idle", "seq": 4}]})
            answers.append(await ws.receive_json_from(5))
            with time_machine.travel(timezone.now() + timedelta(seconds=30)):
                await ws.send_json_to(heartbeat_message(bob_device, 5, id=5))
                answers.append(await ws.receive_json_from(5))
        return answers

    first, second, refused, refused_change, later = async_to_sync(scenario)()

    assert (first["type"], second["type"], later["type"]) == ("ack", "ack", "ack")
    for message, request_id in ((refused, 3), (refused_change, "idle")):
        assert message["type"] == "error"
        assert (message["id"], message["error"]) == (request_id, "rate_limited")
        assert 29 <= message["retry_after"] <= 30
    device = hot.HotUser.parse(hot.store().read(bob.pk)).devices[bob_device]
    assert (device.seq, device.activity) == (5, "active")  # neither refused message was applied


@pytest.mark.parametrize(
    "signal", [{"type": "heartbeat", "seq": 1}, {"type": "activity", "value": "idle", "seq": 1}], ids=["beat", "change"]
)
def test_a_flood_for_made_up_devices_costs_the_user_one_charge_per_message(bob, bob_device, settings, signal):
    settings.PRESENCE_RATE_LIMIT_USER = (1000, 60.0)  # one message every 60 ms, never reached here
    flood, now = 12, timezone.now()

    async def scenario():
        async with socket(bob) as ws:
            await snapshot(ws)
            answers = []
            with time_machine.travel(now, tick=False):
                for number in range(flood):
                    made_up = f"{number:032x}"
                    await ws.send_json_to({"type": "signals", "id": number, "device_id": made_up, "signals": [signal]})
                    answers.append(await ws.receive_json_from(5))
            return answers

    answers = async_to_sync(scenario)()

    assert [(answer["type"], answer["error"]) for answer in answers] == [("error", "not_found")] * flood
    due = float(hot.store().read(bob.pk)["ru"])
    assert due == pytest.approx(now.timestamp() + flood * 60.0 / 1000, abs=1e-3)
