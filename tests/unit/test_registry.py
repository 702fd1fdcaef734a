"""Connections per user across worker processes: the limit holds under a real race."""

from __future__ import annotations

import multiprocessing
import os
import stat
import uuid
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier

import pytest

from leireye.errors import RingError
from leireye.ring.shm import SHM_DIR, create_segment, unlink_segment
from leireye.web.registry import ConnectionRegistry

LIMIT = 5


@pytest.fixture
def name() -> Iterator[str]:
    segment = f"leireye-test-conns-{uuid.uuid4().hex[:12]}"
    yield segment
    unlink_segment(segment)


@pytest.fixture
def registry(name: str) -> Iterator[ConnectionRegistry]:
    owner = ConnectionRegistry.create(name, workers=3, slots=4)
    yield owner
    owner.close()


def test_the_sixth_connection_is_refused_and_the_first_five_stay(
    registry: ConnectionRegistry, name: str
) -> None:
    w0 = ConnectionRegistry.attach(name, 0)
    w1 = ConnectionRegistry.attach(name, 1)
    assert [w0.try_acquire(7, LIMIT) for _ in range(3)] == [True] * 3
    assert [w1.try_acquire(7, LIMIT) for _ in range(3)] == [True, True, False]
    assert registry.count(7) == w0.count(7) == 5
    assert w0.try_acquire(8, LIMIT)  # another user is not affected
    w1.release(7)
    assert w0.try_acquire(7, LIMIT)
    assert not w1.try_acquire(7, LIMIT)
    assert registry.totals() == {7: 5, 8: 1}
    w0.close()
    w1.close()


def test_release_frees_the_slot(registry: ConnectionRegistry, name: str) -> None:
    w0 = ConnectionRegistry.attach(name, 0)
    for user in (1, 2, 3, 4):
        assert w0.try_acquire(user, LIMIT)
    assert not w0.try_acquire(5, LIMIT)  # four slots per worker in this registry
    w0.release(4)
    assert w0.try_acquire(5, LIMIT)
    assert w0.count(4) == 0
    w0.close()


def test_release_without_a_connection_only_warns(
    registry: ConnectionRegistry, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    w0 = ConnectionRegistry.attach(name, 0)
    w0.release(9)
    assert "without a connection" in caplog.text
    assert w0.count(9) == 0
    w0.close()


def test_clear_worker_frees_a_dead_workers_connections(
    registry: ConnectionRegistry, name: str
) -> None:
    w0 = ConnectionRegistry.attach(name, 0)
    w1 = ConnectionRegistry.attach(name, 1)
    for _ in range(LIMIT):
        assert w1.try_acquire(7, LIMIT)
    assert not w0.try_acquire(7, LIMIT)
    w1.close()  # the worker died without releasing anything
    registry.clear_worker(1)
    assert registry.count(7) == 0
    assert w0.try_acquire(7, LIMIT)
    w0.close()


def test_a_worker_starts_with_an_empty_row(registry: ConnectionRegistry, name: str) -> None:
    w2 = ConnectionRegistry.attach(name, 2)
    assert w2.try_acquire(7, LIMIT) and w2.try_acquire(7, LIMIT)
    w2.close()
    replacement = ConnectionRegistry.attach(name, 2)
    assert replacement.count(7) == 0
    replacement.close()


def test_misuse_raises(registry: ConnectionRegistry, name: str) -> None:
    with pytest.raises(RingError, match="not attached as a worker"):
        registry.try_acquire(7, LIMIT)
    with pytest.raises(RingError, match="outside"):
        ConnectionRegistry.attach(name, 3)
    with pytest.raises(ValueError, match="outside"):
        registry.clear_worker(-1)
    w0 = ConnectionRegistry.attach(name, 0)
    with pytest.raises(ValueError, match="user ids"):
        w0.try_acquire(0, LIMIT)
    w0.close()
    w0.close()  # idempotent
    with pytest.raises(RingError, match="closed"):
        w0.count(7)
    with pytest.raises(ValueError):
        ConnectionRegistry.create(name + "-x", workers=0)


def test_attach_checks_the_layout(name: str) -> None:
    create_segment(name, 4096).close()
    with pytest.raises(RingError, match="not a version 2 registry"):
        ConnectionRegistry.attach(name, 0)
    with pytest.raises(RingError, match="does not exist"):
        ConnectionRegistry.attach(name + "-missing", 0)


def test_the_segment_is_private(registry: ConnectionRegistry, name: str) -> None:
    assert stat.S_IMODE((SHM_DIR / name).stat().st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_the_segment_goes_to_the_web_user(name: str) -> None:
    registry = ConnectionRegistry.create(name, workers=1, owner=(65534, 65534))
    st = (SHM_DIR / name).stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    registry.close()


# -- two real processes -------------------------------------------------------------------------


def _grab(name: str, index: int, attempts: int, barrier: Barrier, results: object) -> None:
    registry = ConnectionRegistry.attach(name, index)
    barrier.wait()
    won = sum(registry.try_acquire(42, LIMIT) for _ in range(attempts))
    results.put((index, won))  # type: ignore[attr-defined]
    barrier.wait()  # keep the row until the parent has counted
    registry.close()


def _churn(name: str, index: int, rounds: int, barrier: Barrier, results: object) -> None:
    # Three processes each want two connections of the same user, whose limit is three.
    registry = ConnectionRegistry.attach(name, index)
    barrier.wait()
    over = held_max = 0
    for _ in range(rounds):
        held = sum(registry.try_acquire(42, 3) for _ in range(2))
        total = registry.count(42)
        over += total > 3
        held_max = max(held_max, total)
        for _ in range(held):
            registry.release(42)
    results.put((index, over, held_max))  # type: ignore[attr-defined]
    registry.close()


def test_two_processes_racing_admit_exactly_the_limit(
    registry: ConnectionRegistry, name: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    for _ in range(3):
        barrier = ctx.Barrier(3)
        results = ctx.Queue()
        procs = [ctx.Process(target=_grab, args=(name, i, 50, barrier, results)) for i in (0, 1)]
        for proc in procs:
            proc.start()
        barrier.wait(timeout=60)
        won = dict(results.get(timeout=60) for _ in procs)
        assert sum(won.values()) == LIMIT
        assert registry.count(42) == LIMIT
        barrier.wait(timeout=60)
        for proc in procs:
            proc.join(timeout=60)
            assert proc.exitcode == 0
        for index in (0, 1):
            registry.clear_worker(index)


def test_two_processes_churning_never_exceed_the_limit(
    registry: ConnectionRegistry, name: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    results = ctx.Queue()
    procs = [ctx.Process(target=_churn, args=(name, i, 2000, barrier, results)) for i in (0, 1, 2)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert [over for _, over, _ in outcomes] == [0, 0, 0]
    assert max(held for _, _, held in outcomes) == 3  # the limit was reached, and contended
    assert registry.count(42) == 0
