"""The capture status block: round trip, layout checks, and the seqlock against torn reads."""

from __future__ import annotations

import multiprocessing
import struct
import threading
import time
import uuid
from collections.abc import Iterator

import msgspec
import pytest

from leireye.config import BPF_MAX_BYTES
from leireye.errors import RingError
from leireye.ring.shm import SHM_DIR, unlink_segment
from leireye.ring.status import (
    BPF_BYTES,
    EFFECTIVE_BPF_BYTES,
    ERROR_BYTES,
    CaptureState,
    CaptureStatus,
    StatusBlock,
)
from tests.waiting import scaled


@pytest.fixture
def name() -> Iterator[str]:
    name = f"leireye-test-status-{uuid.uuid4().hex[:12]}"
    yield name
    unlink_segment(name)


@pytest.fixture
def block(name: str) -> Iterator[StatusBlock]:
    block = StatusBlock.create(name)
    yield block
    block.close()


def full_status(k: int = 7) -> CaptureStatus:
    return CaptureStatus(
        state=CaptureState.CAPTURING,
        capturing=True,
        interface="eth0",
        bpf="udp and port 53",
        effective_bpf="(udp and port 53) and not (tcp port 8000)",
        linktype=1,
        snaplen=1600,
        pid=4242,
        started_at_ns=1_700_000_000_000_000_000,
        packets_captured=k,
        bytes_captured=k * 100,
        kernel_drops=k + 1,
        if_drops=k + 2,
        decode_errors=3 * k,
        decode_errors_by_kind={"truncated": k, "malformed": k, "internal": k},
        last_error=f"error {k}",
    )


def test_a_fresh_block_reads_idle(block: StatusBlock, name: str) -> None:
    reader = StatusBlock.attach(name)
    st = reader.read()
    assert st.state == "idle"  # a StrEnum: readers may compare with plain text
    assert st.state is CaptureState.IDLE
    assert not st.capturing
    assert st.heartbeat_ns == 0
    assert reader.heartbeat_age_s() is None
    reader.close()


def test_round_trip_through_another_mapping(block: StatusBlock, name: str) -> None:
    writer = StatusBlock.attach(name, writable=True)
    before = time.time_ns()
    written = full_status()
    writer.write(written)
    reader = StatusBlock.attach(name)
    st = reader.read()
    assert st.updated_ns >= before
    assert st.heartbeat_ns >= before
    all_kinds = {"truncated": 7, "malformed": 7, "unsupported_linktype": 0, "app_parse": 0}
    all_kinds["internal"] = 7
    expected = msgspec.structs.replace(
        written,
        updated_ns=st.updated_ns,
        heartbeat_ns=st.heartbeat_ns,
        decode_errors_by_kind=all_kinds,
    )
    assert st == expected
    writer.close()
    reader.close()


def test_states_are_strings_on_the_wire(block: StatusBlock) -> None:
    for state in CaptureState:
        block.write(CaptureStatus(state=state))
        assert block.read().state is state
    encoded = msgspec.json.encode(block.read())
    assert b'"state":"finished"' in encoded


def test_text_is_cut_on_a_character_boundary(block: StatusBlock) -> None:
    long_error = "é" * ERROR_BYTES  # 2 bytes each: the cut falls inside a character
    block.write(CaptureStatus(last_error=long_error))
    st = block.read()
    assert long_error.startswith(st.last_error)
    assert len(st.last_error.encode()) == ERROR_BYTES


def test_filters_are_kept_whole_or_refused(block: StatusBlock) -> None:
    """A filter cut short would show something else than what the kernel runs."""
    longest = CaptureStatus(bpf="x" * BPF_BYTES, effective_bpf="y" * EFFECTIVE_BPF_BYTES)
    block.write(longest)
    st = block.read()
    assert (st.bpf, st.effective_bpf) == (longest.bpf, longest.effective_bpf)
    with pytest.raises(ValueError, match="effective_bpf"):
        block.write(CaptureStatus(effective_bpf="y" * (EFFECTIVE_BPF_BYTES + 1)))
    with pytest.raises(ValueError, match="bpf"):
        block.write(CaptureStatus(bpf="é" * (BPF_BYTES // 2 + 1)))
    assert block.read() == st  # a refused write leaves the block as it was


def test_the_block_holds_the_longest_filter_the_config_allows() -> None:
    assert BPF_BYTES >= BPF_MAX_BYTES


def test_unknown_decode_error_names_are_ignored(block: StatusBlock) -> None:
    block.write(CaptureStatus(decode_errors_by_kind={"truncated": 2, "no_such_kind": 9}))
    assert block.read().decode_errors_by_kind["truncated"] == 2
    assert "no_such_kind" not in block.read().decode_errors_by_kind


def test_restarts_belong_to_the_supervisor(block: StatusBlock, name: str) -> None:
    block.set_restarts(3)
    capture = StatusBlock.attach(name, writable=True)
    capture.write(full_status())
    capture.beat()
    assert block.read().restarts == 3
    capture.close()


def test_beat_moves_the_heartbeat(block: StatusBlock) -> None:
    block.beat()
    first = block.heartbeat_ns
    assert first > 0
    age = block.heartbeat_age_s(now_ns=first + 2_500_000_000)
    assert age == pytest.approx(2.5)
    block.beat()
    assert block.heartbeat_ns >= first


def test_readers_map_it_read_only(block: StatusBlock, name: str) -> None:
    reader = StatusBlock.attach(name)
    with pytest.raises((ValueError, TypeError)):
        reader.write(full_status())
    with pytest.raises(ValueError, match="read-only"):
        reader.beat()
    reader.close()


# -- layout validation --------------------------------------------------------------------------


def _patch_header(name: str, offset: int, data: bytes) -> None:
    with open(SHM_DIR / name, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize(
    ("offset", "data", "message"),
    [
        (0, b"LEIRING\x00", "not a LeirEye status block"),
        (8, struct.pack("<I", 99), "version is 99"),
        (12, struct.pack("<I", 12), "body size is 12"),
    ],
)
def test_attach_validates_the_layout(
    block: StatusBlock, name: str, offset: int, data: bytes, message: str
) -> None:
    _patch_header(name, offset, data)
    with pytest.raises(RingError, match=message):
        StatusBlock.attach(name)


def test_attach_refuses_a_segment_too_small(name: str) -> None:
    (SHM_DIR / name).write_bytes(b"LEISTAT\x00" + bytes(100))
    with pytest.raises(RingError, match="too small"):
        StatusBlock.attach(name)


def test_attach_to_a_missing_block_is_a_clear_error(name: str) -> None:
    with pytest.raises(RingError, match="does not exist"):
        StatusBlock.attach(name)


# -- the seqlock --------------------------------------------------------------------------------


def test_a_write_between_the_two_loads_makes_the_reader_retry(
    block: StatusBlock, monkeypatch: pytest.MonkeyPatch
) -> None:
    block.write(full_status(1))
    copy = StatusBlock._copy_body
    calls = 0

    def copy_while_a_write_lands(self: StatusBlock) -> bytes:
        nonlocal calls
        calls += 1
        body = copy(self)
        if calls == 1:  # the writer finishes a whole update after our copy, before re-check
            block.write(full_status(2))
        return body

    monkeypatch.setattr(StatusBlock, "_copy_body", copy_while_a_write_lands)
    st = block.read()
    assert calls == 2
    assert st.packets_captured == 2


def test_a_body_half_written_is_never_returned(block: StatusBlock, name: str) -> None:
    block.write(full_status(1))
    words = block._words
    words[2] += 1  # a writer is "in the middle" of an update
    reader = StatusBlock.attach(name)
    with pytest.raises(RingError, match="mid-update"):
        reader.read(timeout_s=0.05)
    # a new writer (the restarted capture process) repairs it
    StatusBlock.attach(name, writable=True).close()
    assert reader.read().packets_captured == 1
    reader.close()


def _assert_consistent(st: CaptureStatus) -> None:
    k = st.packets_captured
    assert st.bytes_captured == 100 * k
    assert (st.kernel_drops, st.if_drops, st.decode_errors) == (k + 1, k + 2, 3 * k)
    assert st.decode_errors_by_kind["truncated"] == k
    assert st.last_error == f"error {k}"


def test_reads_under_a_concurrent_writer_thread_are_consistent(
    block: StatusBlock, name: str
) -> None:
    reader = StatusBlock.attach(name)
    block.write(full_status(0))
    done = threading.Event()

    def writer() -> None:
        k = 0
        while not done.is_set():
            k += 1
            block.write(full_status(k))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen: set[int] = set()
        deadline = time.monotonic() + scaled(0.5)
        while time.monotonic() < deadline:
            st = reader.read(timeout_s=scaled(5))
            _assert_consistent(st)
            seen.add(st.packets_captured)
    finally:
        done.set()
        thread.join()
    assert len(seen) > 1
    reader.close()


def hammer(name: str, seconds: float) -> None:
    """A writer in another process: no GIL in common with the reader, so a copy can really
    overlap a write."""
    block = StatusBlock.attach(name, writable=True)
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        k += 1
        block.write(full_status(k))
    block.close()


def test_reads_under_a_writer_in_another_process_are_consistent(
    block: StatusBlock, name: str
) -> None:
    block.write(full_status(0))
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=hammer, args=(name, scaled(3.0)))
    proc.start()
    try:
        seen: set[int] = set()
        while proc.is_alive() or not seen:
            st = block.read(timeout_s=scaled(5))
            _assert_consistent(st)
            seen.add(st.packets_captured)
            if len(seen) > 2000:
                break
    finally:
        proc.terminate()
        proc.join(scaled(10))
    assert len(seen) > 1
