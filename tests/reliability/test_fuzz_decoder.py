"""The decoder fuzzer, short: random and mutated frames from tests/data through the fast path,
the dpkt reference path and the packet detail, with nothing escaping. The long run is
`scripts/fuzz_decoder.py --frames 1000000` (docs/reliability.md)."""

from __future__ import annotations

import importlib.util
import os
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.reliability

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_decoder.py"
FRAMES = int(os.environ.get("LEIREYE_FUZZ_FRAMES", "20000"))
SEED = int(os.environ.get("LEIREYE_FUZZ_SEED", "20261126"))


@pytest.fixture(scope="module")
def fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_decoder", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_decoder"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_fuzzed_frames_never_escape_any_decoder(fuzz: ModuleType, tmp_path: Path) -> None:
    report = fuzz.run(FRAMES, seed=SEED, out=tmp_path)
    assert report.frames == FRAMES
    assert report.findings == [], [f"{f.path} {f.text} {f.saved}" for f in report.findings]
    # The mutations reach the error paths of every decoder, not only the happy one.
    for path in ("fast", "reference"):
        kinds = report.kinds[path]
        assert sum(kinds.values()) == FRAMES
        assert kinds["truncated"] > FRAMES // 50 and kinds["malformed"] > FRAMES // 50, kinds
        assert kinds["none"] > FRAMES // 4, kinds
    detail = report.kinds["detail"]
    assert detail["Truncated"] > FRAMES // 50 and detail["Malformed"] > FRAMES // 100, detail
    # Every strategy ran, and random bytes were tried under every link type.
    assert report.by_strategy["random"] > FRAMES // 20
    assert {"splice", "linktype", "cut", "bitflip"} <= set(report.by_strategy)


def test_the_corpus_is_the_real_captures(fuzz: ModuleType) -> None:
    corpus = fuzz.load_corpus(sorted(fuzz.DATA.glob("*.pcap")))
    assert len(corpus) >= 600
    assert {linktype for _, linktype in corpus} == {1, 101, 113, 276}


def test_an_escaping_exception_is_isolated_and_saved(
    fuzz: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness itself can fail: a decoder that raises on one frame is caught, that frame
    (and only it) is reported and written to a pcap that reads back."""
    poison = b"\x00POISON"
    real = fuzz.RUNNERS["detail"]

    def detail(frames: Sequence[tuple[bytes, int, int]]) -> Sequence[str]:
        if any(poison in f[0] for f in frames):
            raise IndexError("planted")
        return real(frames)

    original_next = fuzz.Fuzzer.next
    calls = {"n": 0}

    def next_frame(self: object) -> tuple[bytes, int, int]:
        calls["n"] += 1
        frame, linktype, wire = original_next(self)
        return (frame + poison, 1, wire + 7) if calls["n"] == 77 else (frame, linktype, wire)

    monkeypatch.setitem(fuzz.RUNNERS, "detail", detail)
    monkeypatch.setattr(fuzz.Fuzzer, "next", next_frame)
    report = fuzz.run(300, seed=1, batch=128, out=tmp_path)
    assert [(f.path, f.kind) for f in report.findings] == [("detail", "IndexError")]
    saved = report.findings[0].saved
    assert saved is not None and saved.exists()
    data = saved.read_bytes()
    assert struct.unpack("<I", data[20:24])[0] == 1  # link type
    caplen = struct.unpack("<I", data[32:36])[0]
    assert data[40 : 40 + caplen].endswith(poison)
    assert fuzz.main(["--frames", "0", "--paths", "fast"]) == 0


def test_a_hang_is_reported(fuzz: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    def stuck(frames: Sequence[tuple[bytes, int, int]]) -> Sequence[int]:
        while True:  # bounded by the harness's time limit, which is what is tested
            pass

    monkeypatch.setitem(fuzz.RUNNERS, "fast", stuck)
    report = fuzz.run(2, seed=1, paths=["fast"], hang_s=0.2)
    assert {f.kind for f in report.findings} == {"hang"}
