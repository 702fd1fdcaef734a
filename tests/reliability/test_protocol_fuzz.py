"""Random and mutated client messages against a real `leireye run`: valid JSON with wrong types,
keys and huge values, invalid JSON, binary frames, deep nesting, unicode, floods within the rate
limit, and frames that break the WebSocket protocol itself.

What must hold: the server never crashes (the same worker pids at the end, /health ok, no
traceback in the log); every message gets an answer of a documented type, every malformed one an
`error`, and a connection that is closed is closed with a documented code after an `error` or
`auth_error`; the workers' memory stays within MEMORY_BOUND_KB.

LEIREYE_PROTOCOL_FUZZ_CASES (default 800) and LEIREYE_PROTOCOL_FUZZ_SEED change the run."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from leireye.wire import CloseCode, ErrorCode
from tests.reliability.live import (
    ROOT_ONLY,
    cli_token,
    health_ok,
    start,
    started_pids,
    wait_roles,
    web_rss_kb,
)
from tests.reliability.rawws import OP_BINARY, OP_CLOSE, OP_TEXT, RawSocket, frame
from tests.sensor import Sensor
from tests.waiting import scaled
from tests.wsclient import recv_type, run

pytestmark = ROOT_ONLY

CASES = int(os.environ.get("LEIREYE_PROTOCOL_FUZZ_CASES", "800"))
SEED = int(os.environ.get("LEIREYE_PROTOCOL_FUZZ_SEED", "7"))
LANES = 4  # connections fuzzed in parallel, one user each
CASES_PER_SECOND = 40  # per lane: with its probe, 80 messages/s, under the limit of 100
MEMORY_BOUND_KB = 8 * 1024  # growth of each worker's RSS over the run (measured: under 0.5 MiB)
MAX_TEXT = 60_000  # under limits.max_message_bytes (64 KiB): size limits are test_limits' job

REPLY_TYPES = {"auth_success", "auth_error", "subscribed", "unsubscribed", "pong", "error"}
PUSH_TYPES = {"stats", "status", "packet", "packets", "dropped"}
ERROR_CODES = {code.value for code in ErrorCode}
CLOSE_CODES = {int(code) for code in CloseCode} - {CloseCode.GOING_AWAY}
STRINGS = ["", "UDP", "tcp", "ＴＣＰ", "DNS", "\u0000", "\u202etxt", "🙂" * 300, "a" * 20_000,
           "10.0.0.0/33", "::ffff:1.2.3.4", "fd00::/8", "-1", "1e400", "null", "packets", "stats",
           "subscribe", "ping", "auth", "Ａ\u0301\u0301", "\ufeff", "%s%n",
           "' OR 1=1 --"]  # fmt: skip
NUMBERS = [0, 1, -1, 9, 65_535, 65_536, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**100,
           10**4000, 1.5, -0.0, 1e308, 5e-324]  # fmt: skip
TEMPLATES: list[dict[str, Any]] = [
    {"type": "ping", "id": 1},
    {"type": "subscribe", "channel": "packets", "filters": {"port": 9, "protocol": "UDP"}},
    {"type": "subscribe", "channel": "packets", "since": 5, "options": {"batch": True},
     "filters": {"src_ip": "127.0.0.0/8", "min_length": 10, "max_length": 1500}},
    {"type": "subscribe", "channel": "stats", "options": {"interval_ms": 1000}},
    {"type": "unsubscribe", "channel": "packets"},
    {"type": "unsubscribe", "channel": "stats"},
]  # fmt: skip


@dataclass
class Case:
    kind: str
    data: str | bytes
    must_error: bool  # malformed for certain: an `error` is the only right answer


@dataclass
class Outcome:
    case: Case
    replies: list[dict[str, Any]] = field(default_factory=list)
    close: int | None = None
    answered: bool = False  # the probe's pong came back


# -- the cases -----------------------------------------------------------------------------------


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(STRINGS)
    if roll < 0.65:
        return rng.choice(NUMBERS)
    if roll < 0.75:
        return rng.choice([True, False, None])
    if depth > 3:
        return None
    if roll < 0.87:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["port", "protocol", "ip", "since", "batch", "interval_ms", "type", "ｐｏｒｔ", "", "🙂"]
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def mutate(rng: random.Random, message: dict[str, Any]) -> dict[str, Any]:
    message = json.loads(json.dumps(message))
    containers = [message] + [v for v in message.values() if isinstance(v, dict)]
    target = rng.choice(containers)
    roll = rng.random()
    if roll < 0.45 and target:
        target[rng.choice(sorted(target))] = random_value(rng)
    elif roll < 0.6 and target:
        del target[rng.choice(sorted(target))]
    elif roll < 0.8:
        target[
            rng.choice(["extra", "filters", "options", "since", "channel", "id", "ｔｙｐｅ"])
        ] = random_value(rng)
    else:
        message["type"] = random_value(rng)
    return message


def text_case(rng: random.Random) -> Case:
    roll = rng.random()
    template = rng.choice(TEMPLATES)
    if roll < 0.55:
        message = mutate(rng, template)
        for _ in range(rng.randint(0, 2)):
            message = mutate(rng, message)
        return Case("mutated", json.dumps(message, ensure_ascii=rng.random() < 0.5), False)
    if roll < 0.7:
        valid = json.dumps(template)
        return Case("truncated-json", valid[: rng.randrange(len(valid) - 1)], True)
    if roll < 0.76:
        depth = rng.choice([64, 129, 1000, 29_000])
        nested = rng.choice([("[" * depth + "]" * depth), ('{"a":' * depth + "1" + "}" * depth)])
        return Case("deep-nesting", nested, depth > 128)
    if roll < 0.82:
        junk = "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randint(1, 200)))
        return Case("garbage-text", "\x01" + junk, True)
    if roll < 0.87:
        bad = rng.choice(['{"type":"ping","id":NaN}', '{"type":"ping"} trailing',
                          '{"type":"ping","id":"\\ud800"}', "\ufeff{}", "{'type':'ping'}",
                          '{"type":"ping",}', "[]", "null", "7", '"ping"'])  # fmt: skip
        return Case("bad-json", bad, True)
    if roll < 0.92:
        return Case("list", json.dumps([template]), True)
    if roll < 0.96:
        payload = json.dumps(mutate(rng, template)).encode()
        return Case("binary-json", payload, False)
    return Case("binary-not-utf8", bytes([0xFF, 0xFE]) + rng.randbytes(rng.randint(0, 64)), True)


def make_cases(seed: int, count: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        case = text_case(rng)
        if len(case.data.encode() if isinstance(case.data, str) else case.data) <= MAX_TEXT:
            cases.append(case)
    return cases


# -- running them -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensor]:
    users = {"admin": "ADMIN", **{f"lane{i}": "VIEWER" for i in range(LANES + 1)}}
    config = "web: {port: 0, workers: 2}\n"
    s = start(tmp_path_factory.mktemp("protofuzz"), "udp and dst port 9", users, config)
    wait_roles(s, 2)
    yield s
    s.kill()


async def open_lane(url: str) -> ClientConnection:
    ws = await connect(url, open_timeout=scaled(10), close_timeout=scaled(5), max_size=None)
    try:
        await recv_type(ws, "auth_success")
    except BaseException:
        await ws.close()
        raise
    return ws


async def until_probe(ws: ClientConnection, probe: str, outcome: Outcome) -> None:
    deadline = time.monotonic() + scaled(10)
    for _ in range(10_000):
        try:
            raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        except ConnectionClosed as exc:
            outcome.close = exc.rcvd.code if exc.rcvd else -1
            return
        message = json.loads(raw)
        if message.get("type") == "pong" and message.get("id") == probe:
            outcome.answered = True
            return
        if message.get("type") not in PUSH_TYPES:
            outcome.replies.append(message)
    raise AssertionError("no probe answer within 10 000 messages")


async def fuzz_lane(url: str, cases: list[Case], lane: int) -> list[Outcome]:
    outcomes = []
    ws = await open_lane(url)
    last = 0.0
    try:
        for i, case in enumerate(cases):
            # Pace the lane (never a burst to catch up after a slow answer): the rate limit
            # would drop the probe.
            await asyncio.sleep(max(0.0, last + 1 / CASES_PER_SECOND - time.monotonic()))
            last = time.monotonic()
            outcome = Outcome(case)
            probe = f"probe-{lane}-{i}"
            try:
                await ws.send(case.data)
                await ws.send(json.dumps({"type": "ping", "id": probe}))
            except ConnectionClosed as exc:
                outcome.close = exc.rcvd.code if exc.rcvd else -1
            if outcome.close is None:
                try:
                    await until_probe(ws, probe, outcome)
                except TimeoutError:
                    raise AssertionError(f"no answer to {case} ({outcome.replies})") from None
            outcomes.append(outcome)
            if outcome.close is not None:
                await ws.close()
                ws = await open_lane(url)
    finally:
        await ws.close()
    return outcomes


def violations(outcome: Outcome) -> list[str]:
    case, found = outcome.case, []
    label = f"{case.kind} {str(case.data)[:80]!r}"
    for reply in outcome.replies:
        if reply.get("type") not in REPLY_TYPES:
            found.append(f"{label}: undocumented reply {reply}")
        if reply.get("type") == "error" and reply.get("code") not in ERROR_CODES:
            found.append(f"{label}: undocumented error code {reply}")
    if not outcome.replies:
        found.append(f"{label}: no answer (close {outcome.close})")
    if case.must_error and not any(r.get("type") == "error" for r in outcome.replies):
        found.append(f"{label}: no error for a malformed message: {outcome.replies}")
    if outcome.close is not None:
        if outcome.close not in CLOSE_CODES:
            found.append(f"{label}: closed with undocumented code {outcome.close}")
        if not outcome.replies or outcome.replies[-1]["type"] not in ("error", "auth_error"):
            found.append(f"{label}: closed {outcome.close} without saying why")
    elif not outcome.answered:
        found.append(f"{label}: the connection stopped answering")
    return found


def test_fuzzed_messages_are_answered_and_nothing_crashes(sensor: Sensor) -> None:
    port = sensor.web_port()
    urls = [f"ws://127.0.0.1:{port}/ws/capture?token={cli_token(sensor, f'lane{i}')}"
            for i in range(LANES)]  # fmt: skip
    pids_before = started_pids(sensor)
    cases = make_cases(SEED, CASES)
    warm, rest = cases[: LANES * 25], cases[LANES * 25 :]

    async def go(batch: list[Case]) -> list[Outcome]:
        lanes = [batch[i::LANES] for i in range(LANES)]
        done = await asyncio.gather(*(fuzz_lane(u, c, i) for i, (u, c) in
                                      enumerate(zip(urls, lanes, strict=True))))  # fmt: skip
        return [o for lane in done for o in lane]

    outcomes = run(go(warm))  # the workers' allocations settle
    rss_before = web_rss_kb(sensor)
    outcomes += run(go(rest))
    rss_after = web_rss_kb(sensor)

    assert len(outcomes) == len(cases)
    found = [v for o in outcomes for v in violations(o)]
    assert found == [], "\n".join(found[:20])
    kinds = {o.case.kind for o in outcomes}
    assert {"mutated", "truncated-json", "deep-nesting", "binary-json", "bad-json"} <= kinds
    errors = sum(any(r["type"] == "error" for r in o.replies) for o in outcomes)
    assert errors > len(cases) // 3  # the fuzzer mostly sends wrong things
    assert started_pids(sensor) == pids_before, "a process was restarted"
    assert health_ok(sensor)
    assert "Traceback" not in sensor.log and " died " not in sensor.log
    grew = {role: rss_after[role] - rss_before[role] for role in rss_before}
    assert all(kb < MEMORY_BOUND_KB for kb in grew.values()), (rss_before, rss_after)
    print(f"\nprotocol fuzz: {len(cases)} cases, worker RSS before {rss_before} KiB, "
          f"after {rss_after} KiB")  # fmt: skip


def test_a_burst_within_the_rate_limit_gets_every_error(sensor: Sensor) -> None:
    url = f"ws://127.0.0.1:{sensor.web_port()}/ws/capture?token={cli_token(sensor, 'lane4')}"
    burst = 90

    async def go() -> list[dict[str, Any]]:
        ws = await open_lane(url)
        try:
            for i in range(burst):
                await ws.send("{" + "x" * i)
            await ws.send(json.dumps({"type": "ping", "id": "end"}))
            outcome = Outcome(Case("burst", "", True))
            await until_probe(ws, "end", outcome)
            assert outcome.answered and outcome.close is None
            return outcome.replies
        finally:
            await ws.close()

    replies = run(go())
    assert [r.get("code") for r in replies] == ["malformed_json"] * burst


FRAME_VIOLATIONS = {
    "text-not-utf8": frame(OP_TEXT, b'{"type":"ping","id":"\xc3\x28"}'),
    "rsv-bits": frame(OP_TEXT, b'{"type":"ping"}', rsv=4),
    "reserved-opcode": frame(0x3, b"x"),
    "continuation-first": frame(0x0, b"x"),
    "control-over-125": frame(0x9, b"x" * 200),
    "fragmented-control": frame(0x9, b"x", fin=False),
    "binary-fragment-then-text": frame(OP_BINARY, b"{", fin=False) + frame(OP_TEXT, b"}"),
}


@pytest.mark.parametrize("name", sorted(FRAME_VIOLATIONS))
def test_frames_that_break_the_websocket_protocol_end_only_that_connection(
    sensor: Sensor, name: str
) -> None:
    """RFC 6455 says to "fail the WebSocket connection": the server sends a close frame with 1007
    (a text that is not UTF-8) or 1002 (any other violation) and closes the TCP connection at
    once (uvicorn alone dropped it without a close frame, and the client saw 1006). The other
    connections and the workers carry on."""
    port = sensor.web_port()
    token = cli_token(sensor, "lane4")
    with RawSocket(port, f"?token={token}") as bystander, RawSocket(port, f"?token={token}") as raw:
        assert raw.status == 101 == bystander.status
        raw.send(FRAME_VIOLATIONS[name])
        began = time.monotonic()
        frames = raw.frames_until_close(timeout=5)
        assert time.monotonic() - began < scaled(2)
        assert frames and frames[-1].opcode == OP_CLOSE, frames
        assert frames[-1].close_code == (1007 if name == "text-not-utf8" else 1002), frames[-1]
        bystander.send(frame(OP_TEXT, b'{"type":"ping","id":"alive"}'))
        answered = [f for f in bystander_frames(bystander) if b'"alive"' in f.payload]
        assert answered
    assert health_ok(sensor)
    assert "Traceback" not in sensor.log


def bystander_frames(raw: RawSocket) -> Iterator[Any]:
    deadline = time.monotonic() + scaled(5)
    for _ in range(1_000):
        raw.sock.settimeout(max(0.01, deadline - time.monotonic()))
        got = raw.read_frame()
        yield got
        if b'"alive"' in got.payload:
            return
