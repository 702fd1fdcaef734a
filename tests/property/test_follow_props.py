"""Follow Stream on arbitrary segmentations and frames: what each side sent comes back, and no
input makes `follow` raise."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leireye.record import LinkType
from leireye.store.follow import Conversation, follow
from tests.tcpframes import ACK, FIN, SYN, frame

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
C, S = ("10.0.0.1", 1025), ("10.0.0.2", 80)


@st.composite
def exchange(draw: st.DrawFn) -> tuple[list[bytes], dict[str, bytes], bool]:
    """Both sides' bytes, cut into segments, some sent twice (with extra bytes), shuffled; an
    ISN near the wrap or not; SYNs first (or not at all)."""
    sent = {d: draw(st.binary(min_size=0, max_size=400)) for d in ("client", "server")}
    with_syn = draw(st.booleans())
    isns = {d: draw(st.sampled_from([0, 1000, 2**32 - 5, 2**32 - 1])) for d in sent}
    frames: list[bytes] = []
    for d, data in sent.items():
        src, dst = (C, S) if d == "client" else (S, C)
        isn = isns[d]
        at = 0
        while at < len(data):
            size = draw(st.integers(1, 60))
            frames.append(frame(src, dst, isn + 1 + at, data[at : at + size]))
            if draw(st.integers(0, 9)) == 0:
                extra = draw(st.integers(0, 30))
                frames.append(frame(src, dst, isn + 1 + at, data[at : at + size + extra]))
            at += size
        frames.append(frame(src, dst, isn + 1 + len(data), flags=FIN | ACK))
    frames = draw(st.permutations(frames))
    if with_syn:
        frames = [frame(C, S, isns["client"], flags=SYN),
                  frame(S, C, isns["server"], flags=SYN | ACK), *frames]  # fmt: skip
    return frames, sent, with_syn


@SETTINGS
@given(exchange())
def test_any_segmentation_and_order_gives_back_what_was_sent(
    case: tuple[list[bytes], dict[str, bytes], bool],
) -> None:
    frames, sent, with_syn = case
    stream = follow(
        [(i, LinkType.EN10MB, f) for i, f in enumerate(frames)], Conversation("TCP", C, S)
    )
    assert stream.conflicts == 0 and not stream.truncated
    if with_syn:
        assert stream.data("client") == sent["client"]
        assert stream.data("server") == sent["server"]
        assert stream.gap_bytes() == 0
    else:  # the lowest offset seen is the start; the first frame's sender is the client
        ours = stream.client == C
        assert stream.data("client") == sent["client" if ours else "server"]
        assert stream.data("server") == sent["server" if ours else "client"]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(list(LinkType)), st.binary(max_size=120)), max_size=30))
def test_follow_never_raises_on_any_frames(frames: list[tuple[int, bytes]]) -> None:
    stream = follow([(i, lt, buf) for i, (lt, buf) in enumerate(frames)], max_bytes=64)
    assert stream.payload_bytes() <= 64
