"""For any bytes and any link type, neither decoder raises, and the two agree field by field.

Plain random bytes rarely get past an Ethernet header, so the strategies also build frames with
valid outer layers around random inner ones, aim random payloads at the dissected ports, and
mutate frames of the generated mix (byte changes near the headers, cuts, insertions)."""

from __future__ import annotations

import struct
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leireye.decode.decode import decode_batch
from leireye.decode.names import TCP_SERVICES, UDP_SERVICES
from leireye.decode.reference.decoder import reference_batch
from leireye.record import DecodeError, LinkType
from tests.decode_compare import first_mismatch
from tests.traffic import frames as fb
from tests.traffic.mix import MixBuilder, generate

LINKTYPES = [*LinkType, 147]
POOL = generate(400, seed=21).frames
ETHERTYPES = [0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8, 0x9100, 0x8847, 0x0026, 0x88CC]
IP_PROTOS = [6, 17, 1, 58, 132, 0, 43, 44, 51, 60, 59, 50, 47]
PORTS = sorted({*TCP_SERVICES, *UDP_SERVICES, 9999})

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(frames: list[bytes], linktype: int, wire: list[int] | None = None) -> None:
    ts = list(range(len(frames)))
    wire = wire if wire is not None else [len(f) for f in frames]
    fast = decode_batch(frames, ts, wire, linktype)
    ref = reference_batch(frames, ts, wire, linktype)
    mismatch = first_mismatch(frames, fast.records, ref.records, f"link type {linktype}")
    assert mismatch is None, mismatch
    assert not fast.errors[DecodeError.INTERNAL]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(POOL)))
    for _ in range(draw(st.integers(0, 4))):
        if frame:
            at = draw(st.integers(0, min(len(frame), 96) - 1))
            frame[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(frame)))
        frame[at:at] = draw(st.binary(max_size=8))
    if draw(st.booleans()):
        frame = frame[: draw(st.integers(0, len(frame)))]
    return bytes(frame)


@st.composite
def layered(draw: st.DrawFn) -> bytes:
    """Valid-looking outer headers with random fields and random inner bytes."""
    inner = draw(st.binary(max_size=90))
    kind = draw(st.sampled_from(["ipv4", "ipv6", "ether"]))
    if kind == "ether":
        return fb.ether(inner, draw(st.sampled_from(ETHERTYPES)))
    proto = draw(st.sampled_from(IP_PROTOS))
    if proto in (6, 17) and draw(st.booleans()):
        sport, dport = draw(st.sampled_from(PORTS)), draw(st.integers(0, 65535))
        inner = (
            fb.tcp(sport, dport, draw(st.integers(0, 511)), inner)
            if proto == 6
            else fb.udp(sport, dport, inner)
        )
        inner = bytes(inner)
    if kind == "ipv4":
        head = bytearray(fb.ipv4(inner, proto))
        head[0] = draw(st.sampled_from([0x45, 0x46, 0x4F, 0x44, 0x65]))
        if draw(st.booleans()):
            head[2:4] = struct.pack("!H", draw(st.integers(0, 200)))
        if draw(st.booleans()):
            head[6:8] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))
        return fb.ether(bytes(head), 0x0800)
    head = bytearray(fb.ipv6(inner, proto))
    if draw(st.booleans()):
        head[4:6] = struct.pack("!H", draw(st.integers(0, 200)))
    return fb.ether(bytes(head), 0x86DD)


def _message(seed: int, kind: str) -> bytes:
    gen = MixBuilder(seed)
    made: dict[str, Callable[[], bytes]] = {
        "dns": lambda: gen.dns(seed % 3 != 0),
        "mdns": gen.mdns,
        "dhcp": gen.dhcp,
        "hello": lambda: gen.client_hello("example.org"),
        "server": gen.server_hello,
        "request": gen.http_request,
        "response": gen.http_response,
    }
    return made[kind]()


PORT_OF = {
    "dns": 53,
    "mdns": 5353,
    "dhcp": 67,
    "hello": 443,
    "server": 443,
    "request": 80,
    "response": 80,
}


@st.composite
def app_payloads(draw: st.DrawFn) -> bytes:
    """Valid application messages with a few bytes changed or cut, and random payloads, on the
    ports that have a dissector."""
    kind = draw(st.sampled_from(sorted(PORT_OF)))
    message = bytearray(_message(draw(st.integers(0, 1000)), kind))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(message) - 1))
        message[at] = draw(
            st.sampled_from([0, 1, 0x0A, 0x0D, 0x20, 0x3F, 0x80, 0xC0, 0xFF]) | st.integers(0, 255)
        )
    if draw(st.booleans()):
        message = message[: draw(st.integers(0, len(message)))]
    prefix = st.sampled_from([b"GET ", b"HTTP/1.1 ", b"SSH-", b"\x16\x03\x01", b"\x17\x03\x03"])
    payload = draw(
        st.one_of(
            st.just(bytes(message)),
            st.binary(max_size=300),
            st.builds(lambda head, tail: head + tail, prefix, st.binary(max_size=200)),
        )
    )
    port = draw(st.sampled_from([PORT_OF[kind], 5355, 547, 123, 1900, 22, 9999]))
    if draw(st.booleans()):
        return fb.tcp4(draw(st.integers(1024, 65535)), port, 0x18, payload)
    return fb.udp4(draw(st.integers(1024, 65535)), port, payload)


@SETTINGS
@given(frame=st.binary(max_size=160), linktype=st.sampled_from(LINKTYPES))
def test_any_bytes_any_link_type(frame: bytes, linktype: int) -> None:
    check([frame], linktype)


@SETTINGS
@given(frames=st.lists(st.binary(max_size=100), max_size=24), linktype=st.sampled_from(LINKTYPES))
def test_any_batch_of_bytes(frames: list[bytes], linktype: int) -> None:
    check(frames, linktype)


@SETTINGS
@given(frames=st.lists(mutated(), min_size=1, max_size=16), cut=st.booleans())
def test_mutated_mix_frames(frames: list[bytes], cut: bool) -> None:
    check(frames, LinkType.EN10MB, [len(f) + (100 if cut else 0) for f in frames])


@SETTINGS
@given(
    frame=mutated(),
    linktype=st.sampled_from([LinkType.RAW, LinkType.LINUX_SLL, LinkType.NULL, LinkType.IPV6]),
)
def test_mutated_mix_frames_under_other_link_types(frame: bytes, linktype: int) -> None:
    check([frame, frame[14:]], linktype)


@SETTINGS
@given(frames=st.lists(layered(), min_size=1, max_size=12))
def test_random_inner_layers(frames: list[bytes]) -> None:
    check(frames, LinkType.EN10MB)


@SETTINGS
@given(frames=st.lists(app_payloads(), min_size=1, max_size=12), cut=st.booleans())
def test_random_application_payloads(frames: list[bytes], cut: bool) -> None:
    check(frames, LinkType.EN10MB, [len(f) + (7 if cut else 0) for f in frames])
