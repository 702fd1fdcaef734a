"""The session, message by message: authentication, subscriptions, feeds, every reply."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import pytest

from leireye.accounts.principal import AuthFailure, Principal
from leireye.config import LimitsConfig
from leireye.record import Proto
from leireye.ring.status import CaptureState, CaptureStatus
from leireye.stats.layout import StatsSnapshot
from leireye.web.encode import encode_packets
from leireye.web.filters import PacketFilter
from leireye.web.session import TRANSITIONS, Session, State
from leireye.wire import Close
from tests.unit.test_web_encode import make

T0 = 1_700_000_000.0


class Users:
    """Tokens are "<id>:<name>:<expires_at>" (expires "-" for never); anything else fails.
    Admits at most `limit` live connections per user id."""

    def __init__(self, limit: int = 5) -> None:
        self.limit = limit
        self.slots: Counter[int] = Counter()
        self.seen: list[tuple[str, float]] = []

    def authenticate(self, token: str, now: float) -> Principal | AuthFailure:
        self.seen.append((token, now))
        parts = token.split(":")
        if len(parts) != 3 or not parts[0].isdigit():
            return AuthFailure("bad signature")
        expires = None if parts[2] == "-" else float(parts[2])
        if expires is not None and expires <= now:
            return AuthFailure("expired")
        return Principal(
            id=int(parts[0]), username=parts[1], role="ADMIN", expires_at=expires, generation="g"
        )

    def admit(self, principal: Principal) -> bool:
        if self.slots[principal.id] >= self.limit:
            return False
        self.slots[principal.id] += 1
        return True


ALICE = f"1:alice:{T0 + 3600}"


def new_session(
    token: str | None = ALICE, users: Users | None = None, now: float = T0, **limits: Any
) -> Session:
    users = users or Users()
    outbox = limits.pop("outbox", 64)
    flows = limits.pop("flows", False)
    return Session(
        limits=LimitsConfig(**limits),
        authenticate=users.authenticate,
        admit=users.admit,
        now=now,
        auth_timeout_s=10.0,
        query_token=token,
        outbox_messages=outbox,
        flows_enabled=flows,
    )


def drain(session: Session) -> list[Any]:
    """Everything queued: parsed JSON objects, and the Close if there is one."""
    out: list[Any] = []
    while (item := session.next_outgoing()) is not None:
        out.append(item if isinstance(item, Close) else json.loads(item))
    return out


def types(items: list[Any]) -> list[str | int]:
    return [i.code if isinstance(i, Close) else i["type"] for i in items]


def send(session: Session, message: dict[str, Any] | str, now: float = T0) -> list[Any]:
    session.receive(message if isinstance(message, str) else json.dumps(message), now)
    return drain(session)


def snapshot(packets_total: int = 1567, timestamp_ns: int = 1) -> StatsSnapshot:
    return StatsSnapshot(
        timestamp_ns=timestamp_ns,
        started_ns=0,
        packets_total=packets_total,
        bytes_total=2_000_000,
        packets_per_second=45,
        bytes_per_second=125_000,
        protocols={"TCP": 35, "UDP": 10},
        apps={"DNS": 3},
        protocols_total={},
        apps_total={},
        kernel_drops=7,
        if_drops=1,
        ring_lost=2,
        decode_errors=0,
        top_seconds=0,
        top_complete=True,
        top_sources=[],
        top_destinations=[],
        top_ports=[],
    )


def capture(**changes: Any) -> CaptureStatus:
    base: dict[str, Any] = {
        "state": CaptureState.CAPTURING,
        "capturing": True,
        "interface": "en0",
        "started_at_ns": 1705746600_000_000_000,
        "packets_captured": 1567,
    }
    return CaptureStatus(**{**base, **changes})


def packets(first_id: int, n: int, **columns: Any) -> tuple[np.ndarray, list[str]]:
    r = make(n, src="10.0.0.1", dst="10.0.0.2", src_port=1, dst_port=443, proto=Proto.TCP)
    r["seq"] = np.arange(first_id, first_id + n)
    for key, value in columns.items():
        r[key] = value
    return r["seq"].copy(), encode_packets(r)


# -- authentication -------------------------------------------------------------------------------


def test_query_token_authenticates_at_once_with_user_and_limits() -> None:
    session = new_session()
    [success] = drain(session)
    assert session.state is State.OPEN and session.admitted
    assert success == {
        "type": "auth_success",
        "user": {"id": 1, "username": "alice", "role": "ADMIN"},
        "limits": {
            "connections_per_user": 5,
            "messages_per_second": 100,
            "max_message_bytes": 65536,
            "idle_timeout_s": 300.0,
            "outbox_messages": 64,
            "stats_interval_ms": 1000,
            "stats_interval_min_ms": 100,
            "stats_interval_max_ms": 60000,
        },
        "expires_at": "2023-11-14T23:13:20.000Z",
    }


def test_auth_message_authenticates() -> None:
    session = new_session(token=None)
    assert drain(session) == [] and session.state is State.AWAITING_AUTH
    assert types(send(session, {"type": "auth", "token": ALICE})) == ["auth_success"]
    assert session.principal is not None and session.principal.username == "alice"


@pytest.mark.parametrize("token", ["garbage", "", "1:alice:1000"])
def test_invalid_token_gets_auth_error_and_close_4001(token: str) -> None:
    session = new_session(token=None)
    out = send(session, {"type": "auth", "token": token})
    assert out == [
        {"type": "auth_error", "message": "Invalid or expired token"},
        Close(4001, out[1].reason),
    ]
    assert session.closed == out[1] and session.auth_failure is not None
    assert not session.admitted


def test_invalid_query_token_closes_at_once() -> None:
    session = new_session(token="nope")
    assert types(drain(session)) == ["auth_error", 4001]


def test_anything_but_auth_before_authentication_is_refused_and_nothing_streams() -> None:
    session = new_session(token=None)
    for message in (
        {"type": "subscribe", "channel": "packets"},
        {"type": "unsubscribe", "channel": "stats"},
        {"type": "ping"},
    ):
        [error] = send(session, message)
        assert (error["type"], error["code"]) == ("error", "auth_required")
    session.deliver(*packets(1, 3))
    session.tick(T0 + 5, snapshot(), capture())
    assert drain(session) == [] and session.closed is None


def test_no_auth_within_the_timeout_closes_4002() -> None:
    session = new_session(token=None)
    session.tick(T0 + 9.9)
    assert drain(session) == []
    session.tick(T0 + 10)
    assert drain(session) == [
        {"type": "auth_error", "message": "Authentication timeout"},
        Close(4002, "authentication timeout"),
    ]


def test_an_auth_after_the_deadline_is_too_late() -> None:
    session = new_session(token=None)
    assert types(send(session, {"type": "auth", "token": ALICE}, now=T0 + 11)) == [
        "auth_error",
        4002,
    ]


def test_sixth_connection_of_a_user_is_refused_with_4008() -> None:
    users = Users(limit=5)
    sessions = [new_session(users=users) for _ in range(5)]
    assert all(s.admitted for s in sessions)
    sixth = new_session(users=users)
    out = drain(sixth)
    assert types(out) == ["error", 4008]
    assert out[0]["code"] == "too_many_connections" and "alice" in out[0]["message"]
    assert not sixth.admitted
    other = new_session(token="2:bob:-", users=users)
    assert other.admitted


def test_token_expiry_closes_4003_unless_renewed() -> None:
    session = new_session(token=f"1:alice:{T0 + 60}")
    drain(session)
    session.tick(T0 + 59)
    session.tick(T0 + 60)
    assert drain(session)[-2:] == [
        {"type": "auth_error", "message": "Token expired"},
        Close(4003, "token expired"),
    ]


def test_revoke_closes_4001_with_the_reason_and_only_once_authenticated() -> None:
    session = new_session()
    send(session, {"type": "subscribe", "channel": "packets"})
    session.deliver(
        [1, 2], ['{"type":"packet","data":{"id":1}}', '{"type":"packet","data":{"id":2}}']
    )
    session.revoke()
    assert drain(session) == [  # queued packets are not sent after it
        {
            "type": "auth_error",
            "message": "Token revoked: the user was removed or changed password",
        },
        Close(4001, "token revoked"),
    ]
    session.revoke()  # closed already: nothing more
    assert drain(session) == []
    waiting = new_session(token=None)
    waiting.revoke()  # nobody authenticated yet: nothing to revoke
    assert waiting.closed is None


def test_reauth_before_expiry_extends_the_connection() -> None:
    session = new_session(token=f"1:alice:{T0 + 60}")
    drain(session)
    out = send(session, {"type": "auth", "token": f"1:alice:{T0 + 600}"}, now=T0 + 50)
    assert types(out) == ["auth_success"]
    assert out[0]["expires_at"] == "2023-11-14T22:23:20.000Z"
    session.tick(T0 + 61)
    assert session.closed is None
    session.tick(T0 + 600)
    assert session.closed == Close(4003, "token expired")


def test_reauth_as_another_user_is_an_error_and_changes_nothing() -> None:
    session = new_session(token=f"1:alice:{T0 + 60}")
    drain(session)
    [error] = send(session, {"type": "auth", "token": "2:bob:-"}, now=T0 + 1)
    assert (error["code"], error["field"]) == ("user_mismatch", "token")
    assert session.principal is not None and session.principal.id == 1
    session.tick(T0 + 60)
    assert session.closed is not None and session.closed.code == 4003


def test_reauth_with_a_bad_token_closes() -> None:
    session = new_session()
    drain(session)
    assert types(send(session, {"type": "auth", "token": "forged"})) == ["auth_error", 4001]


# -- ping, errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ping", "pong"),
    [
        ({}, {}),
        ({"id": 7}, {"id": 7}),
        ({"id": None}, {"id": None}),
        ({"id": {"a": ["b"]}}, {"id": {"a": ["b"]}}),
    ],
)
def test_ping_pong_echoes_the_id(ping: dict[str, Any], pong: dict[str, Any]) -> None:
    session = new_session()
    drain(session)
    assert send(session, {"type": "ping", **ping}) == [{"type": "pong", **pong}]


def test_a_ping_id_too_large_to_echo_is_an_error() -> None:
    session = new_session(max_message_bytes=1024)
    drain(session)
    frame = '{"type":"ping","id":[' + ",".join(["1e5"] * 200) + "]}"  # echoed as 100000.0
    assert len(frame) < 1024
    [error] = send(session, frame)
    assert (error["code"], error["field"]) == ("invalid_message", "id")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "malformed_json"),
        ('{"type":"hello"}', "unknown_type"),
        ('{"channel":"packets"}', "unknown_type"),
        ('{"type":"subscribe"}', "invalid_message"),
        (b"\xff", "malformed_json"),
        ("[]", "invalid_message"),
    ],
)
def test_bad_frames_get_an_error_and_the_connection_stays_usable(frame: Any, code: str) -> None:
    session = new_session()
    drain(session)
    session.receive(frame, T0)
    [error] = drain(session)
    assert (error["type"], error["code"]) == ("error", code) and error["message"]
    assert send(session, {"type": "ping"}) == [{"type": "pong"}]
    assert session.closed is None


def test_the_transition_table() -> None:
    allowed = {(state, kind.__name__) for state, kind in TRANSITIONS}
    assert allowed == {
        (State.AWAITING_AUTH, "AuthMessage"),
        (State.OPEN, "AuthMessage"),
        (State.OPEN, "SubscribeMessage"),
        (State.OPEN, "UnsubscribeMessage"),
        (State.OPEN, "PingMessage"),
    }


# -- packets --------------------------------------------------------------------------------------


def subscribed(session: Session, **fields: Any) -> list[Any]:
    return send(session, {"type": "subscribe", "channel": "packets", **fields})


def test_spec_subscribe_echoes_the_filters_and_streams_packets() -> None:
    session = new_session()
    drain(session)
    [echo] = subscribed(session, filters={"protocol": "tcp", "port": 443})
    assert echo == {
        "type": "subscribed",
        "channel": "packets",
        "filters": {"protocol": "TCP", "port": 443},
        "options": {"batch": False},
    }
    assert session.subscribed_packets and session.filter is not None
    ids, messages = packets(1, 3)
    session.deliver(ids, messages)
    out = drain(session)
    assert types(out) == ["packet"] * 3 and [p["data"]["id"] for p in out] == [1, 2, 3]


def test_subscribe_without_filters_echoes_an_empty_object() -> None:
    session = new_session()
    drain(session)
    assert subscribed(session)[0]["filters"] == {}
    assert session.filter is not None and session.filter == PacketFilter()


def test_a_second_subscribe_replaces_the_filters() -> None:
    session = new_session()
    drain(session)
    subscribed(session, filters={"protocol": "TCP"})
    [echo] = subscribed(session, filters={"ip": "10.0.0.0/8"})
    assert echo["filters"] == {"ip": "10.0.0.0/8"}
    assert session.filter is not None and session.filter.as_dict() == {"ip": "10.0.0.0/8"}


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"filters": {"colour": "red"}}, "invalid_filter", "colour"),
        ({"filters": {"src_ip": "1.2.3"}}, "invalid_filter", "src_ip"),
        ({"filters": {"port": 70000}}, "invalid_filter", "port"),
        ({"options": {"batch": "yes"}}, "invalid_option", "batch"),
        ({"options": {"interval_ms": 5}}, "invalid_option", "interval_ms"),
        ({"channel": "flows"}, "invalid_channel", "channel"),
    ],
)
def test_a_bad_subscribe_names_the_field_and_changes_nothing(
    fields: dict[str, Any], code: str, field: str
) -> None:
    session = new_session()
    drain(session)
    subscribed(session, filters={"protocol": "UDP"})
    before = session.filter
    [error] = subscribed(session, **fields)
    assert (error["type"], error["code"], error["field"]) == ("error", code, field)
    assert field in error["message"]
    assert session.filter == before and not session.batch_mode


def test_unsubscribe_packets_stops_and_forgets_queued_packets() -> None:
    session = new_session()
    drain(session)
    subscribed(session)
    session.deliver(*packets(1, 5))
    assert send(session, {"type": "unsubscribe", "channel": "packets"}) == [
        {"type": "unsubscribed", "channel": "packets"}
    ]
    session.deliver(*packets(6, 5))
    assert drain(session) == [] and not session.subscribed_packets


def test_unsubscribe_an_unknown_channel_is_an_error() -> None:
    session = new_session()
    drain(session)
    [error] = send(session, {"type": "unsubscribe", "channel": "nope"})
    assert (error["code"], error["field"]) == ("invalid_channel", "channel")


def test_deliver_drops_ids_already_sent() -> None:
    session = new_session()
    drain(session)
    subscribed(session)
    session.deliver(*packets(1, 5))
    session.deliver(*packets(4, 5))
    assert [p["data"]["id"] for p in drain(session)] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_batch_mode_sends_packets_lists_within_the_size_limit() -> None:
    session = new_session(max_message_bytes=4096)
    drain(session)
    [echo] = subscribed(session, options={"batch": True})
    assert echo["options"] == {"batch": True}
    session.deliver(*packets(1, 40))
    out = drain(session)
    assert set(types(out)) == {"packets"} and len(out) > 1
    assert [p["id"] for m in out for p in m["data"]] == list(range(1, 41))
    assert all(len(json.dumps(m, separators=(",", ":"))) <= 4096 for m in out)


def test_resume_tells_the_loss_then_replays_then_goes_live() -> None:
    session = new_session()
    drain(session)
    [echo] = subscribed(session, since=100, filters={"port": 443})
    assert echo["since"] == 100
    assert session.resume_from == 100 and session.replaying
    session.resume_from = None  # the hub takes it
    session.replay_lost(20)
    session.deliver(*packets(121, 3))
    session.replay_done()
    session.deliver(*packets(123, 2))  # the first live batch overlaps: no duplicate
    out = drain(session)
    assert out[0] == {
        "type": "dropped",
        "reason": "resume",
        "count": 20,
        "message": out[0]["message"],
    }
    assert [p["data"]["id"] for p in out[1:]] == [121, 122, 123, 124]
    assert not session.replaying


def test_resume_from_an_id_in_the_future_does_not_hold_live_packets_back() -> None:
    session = new_session()
    drain(session)
    subscribed(session, since=10**12)
    session.replay_done()
    session.deliver(*packets(1, 2))
    assert [p["data"]["id"] for p in drain(session)[0:]] == [1, 2]


def test_a_new_since_goes_back_again() -> None:
    session = new_session()
    drain(session)
    subscribed(session)
    session.deliver(*packets(1, 10))
    out = subscribed(session, since=3)
    session.replay_done()
    session.deliver(*packets(4, 2))
    out += drain(session)
    ids = [m["data"]["id"] for m in out if m["type"] == "packet"]
    assert ids == [*range(1, 11), 4, 5]


def test_a_lapped_worker_tells_its_live_clients() -> None:
    session = new_session()
    drain(session)
    subscribed(session)
    session.deliver(*packets(500, 1), lost=300)
    out = drain(session)
    assert (out[0]["type"], out[0]["reason"], out[0]["count"]) == ("dropped", "ring", 300)
    assert session.stream_lost == 300


# -- stats and status -----------------------------------------------------------------------------


def test_stats_every_second_without_asking_with_all_fields() -> None:
    session = new_session()
    drain(session)
    session.tick(T0 + 0.5, snapshot())
    assert drain(session) == []
    session.tick(T0 + 1.0, snapshot())
    [stats] = drain(session)
    assert stats == {
        "type": "stats",
        "data": {
            "packets_total": 1567,
            "packets_per_second": 45,
            "bytes_per_second": 125_000,
            "protocols": {"TCP": 35, "UDP": 10},
            "bytes_total": 2_000_000,
            "apps": {"DNS": 3},
            "kernel_drops": 7,
            "if_drops": 1,
            "ring_lost": 2,
            "decode_errors": 0,
            "stream_lost": 0,
            "client_dropped": 0,
            "timestamp": "1970-01-01T00:00:00.000Z",
        },
    }
    for second in range(2, 6):
        session.tick(T0 + second)
        assert types(drain(session)) == ["stats"]


def test_stats_interval_is_clamped_and_echoed_and_unsubscribe_stops_them() -> None:
    session = new_session()
    drain(session)
    session.tick(T0, snapshot())
    [echo] = send(session, {"type": "subscribe", "channel": "stats", "options": {"interval_ms": 5}})
    assert echo == {"type": "subscribed", "channel": "stats", "options": {"interval_ms": 100}}
    for step in range(1, 11):
        session.tick(T0 + step / 10)
        assert types(drain(session)) == ["stats"]
    [echo] = send(
        session, {"type": "subscribe", "channel": "stats", "options": {"interval_ms": 10**9}}
    )
    assert echo["options"] == {"interval_ms": 60_000}
    assert send(session, {"type": "unsubscribe", "channel": "stats"}) == [
        {"type": "unsubscribed", "channel": "stats"}
    ]
    session.tick(T0 + 200)
    assert drain(session) == []
    [echo] = send(session, {"type": "subscribe", "channel": "stats"}, now=T0 + 200)
    assert echo["options"] == {"interval_ms": 60_000}


def test_stats_do_not_take_filters_or_since() -> None:
    session = new_session()
    drain(session)
    [error] = send(session, {"type": "subscribe", "channel": "stats", "filters": {"port": 1}})
    assert (error["code"], error["field"]) == ("invalid_filter", "filters")
    [error] = send(session, {"type": "subscribe", "channel": "stats", "since": 1})
    assert (error["code"], error["field"]) == ("invalid_message", "since")


def test_stats_wait_for_a_snapshot() -> None:
    session = new_session()
    drain(session)
    session.tick(T0 + 3)
    assert drain(session) == []
    session.tick(T0 + 3.01, snapshot())
    assert types(drain(session)) == ["stats"]


def test_status_after_auth_and_on_changes_only() -> None:
    session = new_session(token=None)
    session.tick(T0, status=capture())
    assert drain(session) == []
    assert types(send(session, {"type": "auth", "token": ALICE})) == ["auth_success", "status"]
    session.tick(T0 + 0.1, status=capture(packets_captured=99999, kernel_drops=5))
    assert drain(session) == []
    session.tick(T0 + 0.2, status=capture(bpf="tcp port 443", effective_bpf="(tcp port 443)"))
    [status] = drain(session)
    assert status == {
        "type": "status",
        "data": {
            "is_capturing": True,
            "interface": "en0",
            "started_at": "2024-01-20T10:30:00.000Z",
            "packets_captured": 1567,
            "state": "capturing",
            "bpf": "tcp port 443",
            "effective_bpf": "(tcp port 443)",
            "kernel_drops": 0,
            "if_drops": 0,
            "error": None,
        },
    }
    session.tick(
        T0 + 0.3,
        status=capture(
            state=CaptureState.ERROR,
            capturing=False,
            last_error="eth9: No such device",
            started_at_ns=0,
        ),
    )
    [status] = drain(session)
    assert status["data"]["error"] == "eth9: No such device"
    assert status["data"]["started_at"] is None and status["data"]["is_capturing"] is False


def test_query_token_session_gets_status_on_its_first_tick() -> None:
    session = new_session()
    session.tick(T0, snapshot(), capture())
    assert types(drain(session)) == ["auth_success", "status"]


def test_unread_stats_and_status_do_not_pile_up() -> None:
    session = new_session()
    for step in range(1, 50):
        session.tick(T0 + step, snapshot(packets_total=step), capture(interface=f"eth{step}"))
    out = drain(session)
    assert types(out) == ["auth_success", "status", "stats"]
    assert out[1]["data"]["interface"] == "eth49" and out[2]["data"]["packets_total"] == 49


def test_shutdown_closes_1001_and_nothing_follows() -> None:
    session = new_session()
    session.shutdown()
    assert drain(session) == [Close(1001, "server shutting down")]
    session.tick(T0 + 1, snapshot())
    session.receive('{"type":"ping"}', T0 + 1)
    session.deliver(*packets(1, 1))
    session.shutdown()
    assert drain(session) == []


def test_a_long_shutdown_reason_is_cut_to_a_close_frame() -> None:
    session = new_session()
    session.shutdown("é" * 200)
    close = drain(session)[-1]
    assert isinstance(close, Close) and close.code == 1001
    assert len(close.reason.encode()) <= 123 and close.reason.startswith("éé")
