#!/usr/bin/env python3
"""Fuzz the packet decoders: random and mutated frames, and not one exception may escape.

Three paths see every frame:

- `fast`: `leireye.decode.decode.decode_batch`, the numpy path the capture process runs;
- `reference`: `leireye.decode.reference.decoder.reference_batch`, the plain dpkt reading it
  must agree with;
- `detail`: `leireye.decode.detail.describe_frame`, dpkt layer by layer for the packet view,
  fed what the ring stores (the first 256 bytes) and the wire length.

The corpus starts from the real captures in `tests/data/*.pcap` (each frame with its own link
type). Each fuzzed frame is either random bytes under a random link type, or a corpus frame put
through one to three mutations (bit flips, "interesting" bytes and 16-bit lengths near the
headers, cuts, insertions, deletions, splices of two frames, another link type). Frames are
decoded in batches, as the capture process does.

An exception escaping any path, a record marked INTERNAL (an exception the decoder caught as a
last resort: a bug of ours or an unforeseen dpkt escape), or a batch taking longer than
`--hang-s` is a finding: the frame is isolated, saved as a one-packet pcap under `--out`, and the
exit code is 1. Otherwise it prints frames/s and the counts by error kind and exits 0.

    .venv/bin/python scripts/fuzz_decoder.py --frames 1000000
    .venv/bin/python scripts/fuzz_decoder.py --frames 200000 --seed 7 --paths fast,detail
    .venv/bin/python scripts/fuzz_decoder.py --atheris --frames 200000   # coverage-guided

The `--atheris` mode (needs `pip install atheris`) lets libFuzzer choose the bytes, guided by
coverage of the leireye decoders: the first input byte picks the link type, the rest is the
frame; a finding is reported by libFuzzer, which writes the input as `crash-<sha1>`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
PATHS = ("fast", "reference", "detail")
RAW_BYTES = 256  # what the ring keeps of a frame (ring.raw_bytes), the input of `detail`
LINKTYPES = (0, 1, 12, 101, 108, 113, 228, 229, 276, 147, 9999)
INTERESTING_U8 = (0x00, 0x01, 0x02, 0x05, 0x06, 0x0F, 0x11, 0x3A, 0x40, 0x45, 0x60, 0x7F, 0x80,
                  0x81, 0x86, 0x88, 0xC0, 0xFE, 0xFF)  # fmt: skip
INTERESTING_U16 = (0, 1, 4, 7, 8, 14, 20, 40, 0x0800, 0x0806, 0x8100, 0x86DD, 0x8847, 0x88A8,
                   0x7FFF, 0x8000, 0xFFFE, 0xFFFF)  # fmt: skip


Frame = tuple[bytes, int, int]  # bytes, link type, wire length


@dataclass
class Finding:
    path: str
    kind: str  # the exception's class name, "INTERNAL" or "hang"
    text: str
    frame: Frame
    saved: Path | None = None


@dataclass
class Report:
    frames: int = 0
    seconds: float = 0.0
    by_strategy: collections.Counter[str] = field(default_factory=collections.Counter)
    # path -> error kind -> frames: DecodeError names for fast/reference, last layer for detail
    kinds: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    findings: list[Finding] = field(default_factory=list)
    path_seconds: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def rate(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


# -- the corpus -----------------------------------------------------------------------------------


def load_corpus(paths: Sequence[Path]) -> list[tuple[bytes, int]]:
    """(frame, link type) for every packet of the given pcap files."""
    import dpkt

    frames: list[tuple[bytes, int]] = []
    for path in paths:
        with path.open("rb") as f:
            reader = dpkt.pcap.Reader(f)
            frames.extend((bytes(buf), reader.datalink()) for _, buf in reader)
    if not frames:
        raise SystemExit(f"no frames in {[str(p) for p in paths]}")
    return frames


# -- mutations ------------------------------------------------------------------------------------


def _flip_bits(rng: random.Random, b: bytearray) -> None:
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(min(len(b), 128))
        b[at] ^= 1 << rng.randrange(8)


def _set_bytes(rng: random.Random, b: bytearray) -> None:
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(min(len(b), 96))
        b[at] = rng.choice(INTERESTING_U8) if rng.random() < 0.7 else rng.randrange(256)


def _set_u16(rng: random.Random, b: bytearray) -> None:
    if len(b) < 2:
        return
    at = rng.randrange(min(len(b), 96) - 1)
    value = rng.choice(INTERESTING_U16) if rng.random() < 0.7 else rng.randrange(65536)
    b[at : at + 2] = value.to_bytes(2, "big")


def _cut(rng: random.Random, b: bytearray) -> None:
    del b[rng.randint(0, len(b)) :]


def _insert(rng: random.Random, b: bytearray) -> None:
    at = rng.randint(0, min(len(b), 96))
    b[at:at] = rng.randbytes(rng.randint(1, 16))


def _delete(rng: random.Random, b: bytearray) -> None:
    at = rng.randrange(min(len(b), 96))
    del b[at : at + rng.randint(1, 16)]


MUTATIONS: dict[str, Callable[[random.Random, bytearray], None]] = {
    "bitflip": _flip_bits,
    "bytes": _set_bytes,
    "u16": _set_u16,
    "cut": _cut,
    "insert": _insert,
    "delete": _delete,
}


class Fuzzer:
    """Endless (frame, link type, wire length) from a seeded generator; `strategy` names how the
    last one was made."""

    def __init__(self, corpus: list[tuple[bytes, int]], seed: int) -> None:
        self.corpus = corpus
        self.rng = random.Random(seed)
        self.strategy = ""

    def next(self) -> Frame:
        rng = self.rng
        roll = rng.random()
        if roll < 0.10:
            self.strategy = "random"
            frame = rng.randbytes(rng.choice((rng.randint(0, 40), rng.randint(0, 300))))
            linktype = rng.choice(LINKTYPES)
            return frame, linktype, len(frame) + rng.choice((0, 0, rng.randint(1, 1500)))
        base, linktype = rng.choice(self.corpus)
        buf = bytearray(base)
        if roll < 0.17:
            self.strategy = "splice"
            other, _ = rng.choice(self.corpus)
            buf = buf[: rng.randint(0, len(buf))] + other[rng.randint(0, len(other)) :]
        elif roll < 0.22:
            self.strategy = "linktype"
            linktype = rng.choice(LINKTYPES)
        else:
            names = rng.sample(sorted(MUTATIONS), rng.randint(1, 3))
            self.strategy = "+".join(sorted(names))
            for name in names:
                if buf:
                    MUTATIONS[name](rng, buf)
        frame = bytes(buf)
        wire = len(base) if rng.random() < 0.8 else len(frame) + rng.randint(0, 64)
        return frame, linktype, max(wire, len(frame))


# -- running the decoders --------------------------------------------------------------------------


class Hang(Exception):
    """A batch or a frame took longer than allowed."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise Hang in this (main) thread after `seconds` (works while Python code runs)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"over {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _fast(frames: Sequence[Frame]) -> list[int]:
    from leireye.decode.decode import decode_batch

    out: list[int] = []
    for linktype, group in _by_linktype(frames):
        batch = decode_batch(
            [f[0] for f in group], [0] * len(group), [f[2] for f in group], linktype
        )
        out.extend(int(e) for e in batch.records["error"])
    return out


def _reference(frames: Sequence[Frame]) -> list[int]:
    from leireye.decode.reference.decoder import reference_batch

    out: list[int] = []
    for linktype, group in _by_linktype(frames):
        batch = reference_batch(
            [f[0] for f in group], [0] * len(group), [f[2] for f in group], linktype
        )
        out.extend(int(e) for e in batch.records["error"])
    return out


def _detail(frames: Sequence[Frame]) -> list[str]:
    from leireye.decode.detail import describe_frame

    out: list[str] = []
    for frame, linktype, wire in frames:
        layers = describe_frame(frame[:RAW_BYTES], linktype, wire)
        last = str(layers[-1]["layer"]) if layers else "none"
        out.append(last if last in ("Malformed", "Truncated") else "ok")
    return out


def _by_linktype(frames: Sequence[Frame]) -> list[tuple[int, list[Frame]]]:
    groups: dict[int, list[Frame]] = collections.defaultdict(list)
    for f in frames:
        groups[f[1]].append(f)
    return sorted(groups.items())


RUNNERS: dict[str, Callable[[Sequence[Frame]], Sequence[int | str]]] = {
    "fast": _fast,
    "reference": _reference,
    "detail": _detail,
}


def _error_names() -> dict[int, str]:
    from leireye.record import DecodeError

    return {int(kind): kind.name.lower() for kind in DecodeError}


def check_batch(path: str, frames: Sequence[Frame], hang_s: float) -> tuple[list[Any], str]:
    """The path's results for `frames`, or ([], why) when it raised or hung."""
    try:
        with time_limit(hang_s):
            return list(RUNNERS[path](frames)), ""
    except Hang as exc:
        return [], f"hang: {exc}"
    except Exception as exc:  # the very thing being looked for
        return [], f"{type(exc).__name__}: {exc}"


def isolate(path: str, frames: Sequence[Frame], why: str, hang_s: float) -> list[Finding]:
    """The frames of a failed batch that fail on their own (each one within `hang_s`)."""
    found = []
    for frame in frames:
        _, reason = check_batch(path, [frame], hang_s)
        if reason:
            kind = "hang" if reason.startswith("hang") else reason.split(":", 1)[0]
            found.append(Finding(path, kind, reason[:300], frame))
    if not found:  # only fails in company: keep the whole batch's first frame as a lead
        found.append(Finding(path, "batch-only", why[:300], frames[0]))
    return found


def save(finding: Finding, out: Path, index: int) -> Path:
    """The frame as a one-packet classic pcap (its link type, its wire length kept)."""
    from leireye.capture.pcapfile import write_pcap

    out.mkdir(parents=True, exist_ok=True)
    frame, linktype, wire = finding.frame
    path = out / f"{finding.path}-{finding.kind}-{index}.pcap"
    write_pcap(path, [0], [wire], [frame], linktype, 262144)
    return path


def run(
    frames: int,
    seed: int = 1,
    paths: Sequence[str] = PATHS,
    corpus_files: Sequence[Path] | None = None,
    batch: int = 2048,
    hang_s: float = 30.0,
    out: Path | None = None,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    """Fuzz `frames` frames through `paths`; findings are saved under `out` when given."""
    corpus = load_corpus(corpus_files or sorted(DATA.glob("*.pcap")))
    fuzzer = Fuzzer(corpus, seed)
    names = _error_names()
    report = Report()
    start = time.perf_counter()
    last_progress = start
    while report.frames < frames:
        todo: list[Frame] = []
        for _ in range(min(batch, frames - report.frames)):
            todo.append(fuzzer.next())
            report.by_strategy[fuzzer.strategy] += 1
        for path in paths:
            began = time.perf_counter()
            results, why = check_batch(path, todo, hang_s)
            report.path_seconds[path] += time.perf_counter() - began
            if why:
                report.findings.extend(isolate(path, todo, why, min(hang_s, 5.0)))
                continue
            for frame, result in zip(todo, results, strict=True):
                kind = names[result] if isinstance(result, int) else result
                report.kinds[path][kind] += 1
                if kind == "internal":
                    report.findings.append(Finding(path, "INTERNAL", "record marked INTERNAL",
                                                   frame))  # fmt: skip
        report.frames += len(todo)
        report.seconds = time.perf_counter() - start
        if progress and time.perf_counter() - last_progress > 10:
            last_progress = time.perf_counter()
            progress(report)
    if out is not None:
        for i, finding in enumerate(report.findings[:100]):
            finding.saved = save(finding, out, i)
    return report


def print_report(report: Report, paths: Sequence[str], seed: int) -> None:
    print(f"seed {seed}: {report.frames} frames in {report.seconds:.1f} s, "
          f"{report.rate:,.0f} frames/s through {'+'.join(paths)}")  # fmt: skip
    for path in paths:
        counts = report.kinds.get(path, collections.Counter())
        text = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        seconds = report.path_seconds[path]
        speed = f"{report.frames / seconds:>9,.0f} frames/s" if seconds else ""
        print(f"  {path:<9} {speed}  {text}")
    top = ", ".join(f"{k} {v}" for k, v in report.by_strategy.most_common(8))
    print(f"  strategies: {top}, ... ({len(report.by_strategy)} kinds)")
    escapes = collections.Counter((f.path, f.kind) for f in report.findings)
    print(f"  findings: {sum(escapes.values())}"
          + "".join(f"\n    {p} {k}: {n}" for (p, k), n in escapes.items()))  # fmt: skip
    for finding in report.findings[:10]:
        print(f"    {finding.path} {finding.text} -> {finding.saved}")


# -- atheris ----------------------------------------------------------------------------------


def run_atheris(frames: int, argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["leireye"]):
        from leireye.decode.decode import decode_batch
        from leireye.decode.detail import describe_frame
        from leireye.decode.reference.decoder import reference_batch
        from leireye.record import DecodeError

    def one_input(data: bytes) -> None:
        if not data:
            return
        linktype = LINKTYPES[data[0] % len(LINKTYPES)]
        frame = data[1:]
        for decode in (decode_batch, reference_batch):
            batch = decode([frame], [0], [len(frame)], linktype)
            if batch.errors[DecodeError.INTERNAL]:
                raise AssertionError(f"{decode.__name__}: record marked INTERNAL")
        describe_frame(frame[:RAW_BYTES], linktype, len(frame))

    seeds = Path(tempfile.mkdtemp(prefix="leireye-atheris-"))
    for i, (frame, linktype) in enumerate(load_corpus(sorted(DATA.glob("*.pcap")))):
        (seeds / f"{i:04d}").write_bytes(bytes([LINKTYPES.index(linktype)]) + frame)
    atheris.Setup([sys.argv[0], f"-runs={frames}", "-max_len=512", *argv, str(seeds)], one_input)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument("--paths", default=",".join(PATHS), help="fast,reference,detail")
    parser.add_argument("--batch", type=int, default=2048, help="frames per decode_batch call")
    parser.add_argument("--hang-s", type=float, default=30.0, help="a batch slower than this hangs")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "leireye-fuzz",
                        help="where findings are saved as pcaps")  # fmt: skip
    parser.add_argument("--corpus", type=Path, nargs="*", help="pcaps (default: tests/data)")
    parser.add_argument("--atheris", action="store_true", help="coverage-guided, via libFuzzer")
    args, rest = parser.parse_known_args(argv)
    if args.atheris:
        run_atheris(args.frames, rest)
        return 0
    if rest:
        parser.error(f"unknown arguments {rest}")
    paths = [p for p in args.paths.split(",") if p]
    if unknown := set(paths) - set(PATHS):
        parser.error(f"unknown paths {sorted(unknown)}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)

    def progress(r: Report) -> None:
        print(f"  ... {r.frames} frames, {r.rate:,.0f}/s, {len(r.findings)} findings", flush=True)

    report = run(args.frames, seed, paths, args.corpus, args.batch, args.hang_s, args.out, progress)
    print_report(report, paths, seed)
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
