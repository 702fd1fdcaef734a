from __future__ import annotations

import json

import msgspec
import pytest

from leireye.wire import (
    AuthError,
    AuthMessage,
    Close,
    CloseCode,
    Dropped,
    ErrorCode,
    ErrorMessage,
    PingMessage,
    Pong,
    ProtocolError,
    ServerMessage,
    Subscribed,
    SubscribeMessage,
    SubscribeOptions,
    UnsubscribeMessage,
    decode_client,
    encode,
)


def test_spec_client_messages_decode() -> None:
    assert decode_client('{"type": "auth", "token": "abc"}') == AuthMessage("abc")
    spec_subscribe = {
        "type": "subscribe",
        "channel": "packets",
        "filters": {"protocol": "TCP", "port": 443},
    }
    assert decode_client(json.dumps(spec_subscribe)) == SubscribeMessage(
        "packets", {"protocol": "TCP", "port": 443}
    )
    stats = '{"type":"subscribe","channel":"stats","options":{"interval_ms":1000}}'
    assert decode_client(stats) == SubscribeMessage("stats", options={"interval_ms": 1000})
    assert decode_client(b'{"type":"unsubscribe","channel":"packets"}') == UnsubscribeMessage(
        "packets"
    )
    assert decode_client('{"type":"ping"}') == PingMessage()
    assert decode_client('{"type":"ping","id":{"n":[1,2]}}') == PingMessage({"n": [1, 2]})


def test_unknown_top_level_fields_and_null_filters_are_accepted() -> None:
    message = decode_client('{"type":"subscribe","channel":"packets","filters":null,"x":1}')
    assert message == SubscribeMessage("packets")
    assert decode_client('{"type":"ping","extra":[1]}') == PingMessage()


def test_since() -> None:
    message = decode_client('{"type":"subscribe","channel":"packets","since":41}')
    assert isinstance(message, SubscribeMessage) and message.since == 41
    bad = decode_client('{"type":"subscribe","channel":"packets","since":-1}')
    assert isinstance(bad, ProtocolError)
    assert (bad.code, bad.field) == (ErrorCode.INVALID_MESSAGE, "since")


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ("{", ErrorCode.MALFORMED_JSON, None),
        ("", ErrorCode.MALFORMED_JSON, None),
        (b"\xff\xfe", ErrorCode.MALFORMED_JSON, None),
        ("\ud800", ErrorCode.MALFORMED_JSON, None),
        ('{"type":"ping","id":"\\ud800"}', ErrorCode.MALFORMED_JSON, None),
        ("[" * 5000 + "]" * 5000, ErrorCode.INVALID_MESSAGE, None),
        ('{"type":"ping","id":' + "[" * 5000 + "]" * 5000 + "}", ErrorCode.MALFORMED_JSON, None),
        ("[1]", ErrorCode.INVALID_MESSAGE, None),
        ("42", ErrorCode.INVALID_MESSAGE, None),
        ('{"token":"x"}', ErrorCode.UNKNOWN_TYPE, "type"),
        ('{"type":"hello"}', ErrorCode.UNKNOWN_TYPE, "type"),
        ('{"type":7}', ErrorCode.UNKNOWN_TYPE, "type"),
        ('{"type":"auth"}', ErrorCode.INVALID_MESSAGE, "token"),
        ('{"type":"auth","token":5}', ErrorCode.INVALID_MESSAGE, "token"),
        ('{"type":"subscribe"}', ErrorCode.INVALID_MESSAGE, "channel"),
        (
            '{"type":"subscribe","channel":"packets","filters":[1]}',
            ErrorCode.INVALID_MESSAGE,
            "filters",
        ),
        (
            '{"type":"subscribe","channel":"stats","options":5}',
            ErrorCode.INVALID_MESSAGE,
            "options",
        ),
        ('{"type":"unsubscribe","channel":null}', ErrorCode.INVALID_MESSAGE, "channel"),
    ],
)
def test_bad_frames_are_explained(frame: str | bytes, code: ErrorCode, field: str | None) -> None:
    problem = decode_client(frame)
    assert isinstance(problem, ProtocolError)
    assert (problem.code, problem.field) == (code, field)
    message = json.loads(encode(problem.to_message()))
    assert message["type"] == "error" and message["code"] == code and message["message"]
    assert ("field" in message) == (field is not None)


def test_unknown_type_message_is_short_whatever_the_type() -> None:
    problem = decode_client(json.dumps({"type": "x" * 50_000}))
    assert isinstance(problem, ProtocolError) and len(problem.message) < 200


def test_server_messages_have_the_spec_shapes() -> None:
    assert json.loads(encode(AuthError("Invalid or expired token"))) == {
        "type": "auth_error",
        "message": "Invalid or expired token",
    }
    echo = Subscribed("packets", {"protocol": "TCP", "port": 443}, SubscribeOptions(batch=False))
    assert json.loads(encode(echo)) == {
        "type": "subscribed",
        "channel": "packets",
        "filters": {"protocol": "TCP", "port": 443},
        "options": {"batch": False},
    }
    assert json.loads(encode(Pong())) == {"type": "pong"}
    assert json.loads(encode(Pong(None))) == {"type": "pong", "id": None}
    assert json.loads(encode(ErrorMessage("rate_limited", "slow down"))) == {
        "type": "error",
        "code": "rate_limited",
        "message": "slow down",
    }
    assert json.loads(encode(Dropped("slow_consumer", 3, "3 skipped"))) == {
        "type": "dropped",
        "reason": "slow_consumer",
        "count": 3,
        "message": "3 skipped",
    }


def test_every_server_message_round_trips_through_the_union() -> None:
    decoder = msgspec.json.Decoder(ServerMessage)
    for message in (
        AuthError("x"),
        Subscribed("stats", options=SubscribeOptions(interval_ms=500)),
        Pong(5),
        ErrorMessage("invalid_filter", "bad", "port"),
        Dropped("resume", 1, "gone"),
    ):
        assert decoder.decode(encode(message)) == message


def test_close_codes_are_distinct_application_or_standard_codes() -> None:
    codes = [int(c) for c in CloseCode]
    assert len(set(codes)) == len(codes)
    assert all(c in (1000, 1001, 1009) or 4000 <= c <= 4999 for c in codes)
    assert Close(4001, "authentication failed") == Close(4001, "authentication failed")
