"""The ring in real shared memory, across real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from leireye.errors import RingError
from leireye.record import RECORD_DTYPE
from leireye.ring import Ring, RingLayout, RingWriter
from leireye.ring.shm import SHM_DIR, unlink_segment


@pytest.fixture
def ring_name() -> Iterator[str]:
    name = f"leireye-test-{uuid.uuid4().hex[:12]}"
    yield name
    unlink_segment(name)


def run_python(code: str, *, user: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", code]
    if user is not None:
        import pwd

        pw = pwd.getpwnam(user)
        cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_an_attaching_process_never_unlinks_the_ring(ring_name: str) -> None:
    ring = Ring.create(ring_name, RingLayout(capacity=1024, raw_bytes=32))
    recs = np.zeros(10, dtype=RECORD_DTYPE)
    recs["wire_len"] = 60
    RingWriter(ring).write(recs)
    code = (
        "from leireye.ring import Ring, RingReader\n"
        f"r = Ring.attach({ring_name!r})\n"
        "b = RingReader(r, 'oldest').read()\n"
        "print(len(b), int(b.records['wire_len'].sum()))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10", "600"]
    assert (SHM_DIR / ring_name).exists()
    ring.unlink()
    ring.close()
    assert not (SHM_DIR / ring_name).exists()


def test_readers_map_the_ring_read_only(ring_name: str) -> None:
    ring = Ring.create(ring_name, RingLayout(capacity=1024, raw_bytes=0))
    reader_side = Ring.attach(ring_name)
    with pytest.raises(ValueError, match="read-only"):
        reader_side.records["seq"][0] = 1
    reader_side.close()
    ring.unlink()
    ring.close()


def test_closing_under_a_live_view_raises_instead_of_crashing(ring_name: str) -> None:
    ring = Ring.create(ring_name, RingLayout(capacity=1024, raw_bytes=0))
    view = ring.records[:4]
    with pytest.raises(BufferError):
        ring.close()
    del view
    ring.unlink()


def test_attach_to_a_missing_ring_is_a_clear_error(ring_name: str) -> None:
    with pytest.raises(RingError, match="does not exist"):
        Ring.attach(ring_name)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the segment to another user")
def test_an_unprivileged_reader_can_attach_a_segment_handed_to_it(ring_name: str) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    ring = Ring.create(
        ring_name, RingLayout(capacity=1024, raw_bytes=0), owner=(nobody.pw_uid, nobody.pw_gid)
    )
    code = f"from leireye.ring import Ring; print(Ring.attach({ring_name!r}).capacity)"
    result = run_python(code, user="nobody")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1024"
    ring.unlink()
    ring.close()
