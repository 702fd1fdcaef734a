"""The verification gate: at most `slots` at once, a bounded wait for `queue` more per lane,
known pairs served first, everyone else refused at once. Real threads, synchronised with events
and polling (no sleeps); a refusal "at once" is one that comes while every slot is still held."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from leireye.accounts.gate import GateBusy, VerificationGate
from tests.waiting import scaled, wait_for


class Holder:
    """A thread that takes a slot and keeps it until released."""

    def __init__(self, gate: VerificationGate, name: str, log: list[str], known: bool = False):
        self.release = threading.Event()
        self.outcome: str | None = None
        self._thread = threading.Thread(target=self._run, args=(gate, name, log, known))
        self._thread.start()

    def _run(self, gate: VerificationGate, name: str, log: list[str], known: bool) -> None:
        try:
            with gate.slot(known):
                log.append(name)
                self.outcome = "served"
                self.release.wait(scaled(30))
        except GateBusy:
            self.outcome = "busy"

    def finish(self) -> str | None:
        self.release.set()
        self._thread.join(scaled(30))
        return self.outcome


def try_slot(gate: VerificationGate, known: bool = False) -> None:
    with gate.slot(known):
        pass


@contextmanager
def holders(gate: VerificationGate, count: int, log: list[str]) -> Iterator[list[Holder]]:
    held = [Holder(gate, f"h{i}", log) for i in range(count)]
    wait_for(lambda: gate.busy() == count, 10, "the slots to be taken")
    try:
        yield held
    finally:
        for holder in held:
            holder.finish()


def test_at_most_slots_run_and_the_queue_is_bounded() -> None:
    gate = VerificationGate(slots=2, queue=2, wait_s=scaled(30))
    log: list[str] = []
    with holders(gate, 2, log):
        waiters = [Holder(gate, f"w{i}", log) for i in range(2)]
        wait_for(lambda: gate.waiting() == 2, 10, "two waiters")
        with pytest.raises(GateBusy) as info:  # the queue is full: refused while slots are held
            try_slot(gate)
        assert info.value.retry_after_s == 1.0
        assert gate.busy() == 2 and gate.refused == 1
    assert [w.finish() for w in waiters] == ["served", "served"]
    assert gate.peak_busy == 2 and gate.served == 4
    assert gate.busy() == 0 and gate.waiting() == 0


def test_a_waiter_gives_up_after_wait_s() -> None:
    gate = VerificationGate(slots=1, queue=4, wait_s=0.05)
    with holders(gate, 1, []), pytest.raises(GateBusy):
        try_slot(gate)
    assert gate.waiting() == 0 and gate.refused == 1
    with gate.slot():  # the slot was given back
        assert gate.busy() == 1


def test_known_pairs_go_first_and_have_their_own_places() -> None:
    gate = VerificationGate(slots=1, queue=1, wait_s=scaled(30))
    log: list[str] = []
    with holders(gate, 1, log):
        stranger = Holder(gate, "stranger", log)
        wait_for(lambda: gate.waiting() == 1, 10, "the stranger to wait")
        with pytest.raises(GateBusy):  # the strangers' lane is full
            try_slot(gate, known=False)
        regular = Holder(gate, "regular", log, known=True)  # ... the known lane is not
        wait_for(lambda: gate.waiting() == 2, 10, "the regular to wait")
    wait_for(lambda: len(log) == 2, 10, "the next to be served")
    assert log == ["h0", "regular"]  # the regular came second and went first
    assert regular.finish() == "served"
    assert stranger.finish() == "served"
    assert log == ["h0", "regular", "stranger"]


def test_a_slot_is_given_back_when_the_block_raises() -> None:
    gate = VerificationGate(slots=1, queue=0, wait_s=0)
    with pytest.raises(RuntimeError), gate.slot():
        raise RuntimeError("a bug in a verification")
    with gate.slot():
        pass
    assert gate.busy() == 0


@pytest.mark.parametrize(("slots", "queue", "wait_s"), [(0, 1, 1.0), (1, -1, 1.0), (1, 1, -1.0)])
def test_nonsense_sizes_are_refused(slots: int, queue: int, wait_s: float) -> None:
    with pytest.raises(ValueError):
        VerificationGate(slots, queue, wait_s)
