"""The decode_batch API: shapes, the reusable `out` buffer, error counts, chunking, bytes-likes."""

from __future__ import annotations

import numpy as np
import pytest

from leireye.decode.decode import CHUNK, decode_batch
from leireye.decode.reference.decoder import decode_reference, reference_batch
from leireye.record import RECORD_DTYPE, DecodeError, LinkType
from tests.traffic import frames as fb
from tests.traffic.mix import generate


def test_records_and_error_counts() -> None:
    frames = [fb.tcp4(1, 443), b"\x00" * 5, fb.udp4(1, 53, b"\x01")]
    batch = decode_batch(frames, [10, 20, 30], [60, 5, 60], LinkType.EN10MB)
    assert batch.records.dtype == RECORD_DTYPE and len(batch.records) == 3
    assert list(batch.records["ts_ns"]) == [10, 20, 30] and not batch.records["seq"].any()
    assert batch.errors.shape == (len(DecodeError),)
    counts = {kind: int(batch.errors[kind]) for kind in DecodeError if batch.errors[kind]}
    assert counts == {DecodeError.NONE: 1, DecodeError.TRUNCATED: 1, DecodeError.APP_PARSE: 1}


def test_out_buffer_is_overwritten_in_every_field() -> None:
    mix = generate(300, seed=5)
    expected = decode_batch(mix.frames, mix.ts_ns, mix.wire_lens, LinkType.EN10MB).records
    out = np.frombuffer(
        np.random.default_rng(1).bytes(400 * RECORD_DTYPE.itemsize), dtype=RECORD_DTYPE
    ).copy()
    batch = decode_batch(
        mix.frames, np.array(mix.ts_ns), np.array(mix.wire_lens), LinkType.EN10MB, out=out
    )
    assert np.shares_memory(batch.records, out) and len(batch.records) == 300
    assert batch.records.tobytes() == expected.tobytes()


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="timestamps"):
        decode_batch([b""], [1, 2], [0], LinkType.EN10MB)
    with pytest.raises(ValueError, match="RECORD_DTYPE"):
        decode_batch([b""], [1], [0], LinkType.EN10MB, out=np.zeros(1, dtype=np.uint8))
    with pytest.raises(ValueError, match="RECORD_DTYPE"):
        decode_batch(
            [b"", b""], [1, 2], [0, 0], LinkType.EN10MB, out=np.zeros(1, dtype=RECORD_DTYPE)
        )


def test_empty_batch() -> None:
    batch = decode_batch([], [], [], LinkType.EN10MB)
    assert len(batch.records) == 0 and batch.errors.sum() == 0


def test_batches_larger_than_a_chunk_and_single_frames() -> None:
    mix = generate(CHUNK + 300, seed=6)
    records = decode_batch(mix.frames, mix.ts_ns, mix.wire_lens, LinkType.EN10MB).records
    for i in (0, CHUNK - 1, CHUNK, CHUNK + 299):
        batch = decode_batch([mix.frames[i]], [mix.ts_ns[i]], [mix.wire_lens[i]], LinkType.EN10MB)
        one = batch.records.tobytes()
        assert one == records[i].tobytes()
        assert (
            decode_reference(
                mix.frames[i], mix.ts_ns[i], mix.wire_lens[i], LinkType.EN10MB
            ).tobytes()
            == one
        )


def test_bytes_likes_are_accepted() -> None:
    frames = [fb.tcp4(1, 80, 0x18, b"GET / HTTP/1.1\r\n\r\n"), fb.udp4(1, 53, bytes(12))]
    views = [memoryview(frames[0]), bytearray(frames[1])]
    fast = decode_batch(views, [1, 2], [len(f) for f in frames], LinkType.EN10MB).records  # type: ignore[arg-type]
    ref = reference_batch(views, [1, 2], [len(f) for f in frames], LinkType.EN10MB).records  # type: ignore[arg-type]
    assert fast.tobytes() == ref.tobytes()
    assert list(fast["info"]) == [b"HTTP GET /", b"DNS query"]


def test_wire_length_and_link_type_wrap_to_their_fields() -> None:
    record = decode_batch([b""], [0], [(1 << 32) + 5], 70000).records[0]
    assert (record["wire_len"], record["linktype"], record["error"]) == (
        5,
        70000 & 0xFFFF,
        DecodeError.UNSUPPORTED_LINKTYPE,
    )
    assert decode_reference(b"", 0, (1 << 32) + 5, 70000).tobytes() == record.tobytes()
