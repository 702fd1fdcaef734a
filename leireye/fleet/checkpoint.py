"""What a fleet central keeps on disk between runs: its directory and the next packet id.

The central's ring lives in shared memory and is made anew by every `leireye central`, yet the
packet ids it hands out must keep increasing across restarts (clients resume with `since`). So
the ring is created with a base id (`Ring.create(..., base_id=)`) read from
`<state_dir>/central/ids.json`: `{"next_id": N, "boot_id": B}` says that no id at or above N
was ever handed out, by a run on the kernel boot B (`/proc/sys/kernel/random/boot_id`). The
ingest keeps it true *before* it writes: when a batch would reach N, it first moves N `RESERVE`
ids further (a temporary file, fsync, rename), so one write in about a million ids. An id is
therefore never handed out twice, whatever stops the central.

Where the next run continues is the journal's business (`leireye.fleet.journal`): after a
clean stop (`"clean": true`, the exact next id, written after the journal's fsync) or a crash
on the same boot (a process killed: the page cache still holds every journal write) the
journal is complete and the ids go on right after it, its last packets replayed with their
ids; after a crash on another boot (a power cut: the journal's unsynced tail may be lost) the
ids jump to N, past the reservation. So `"clean"` is still needed: it is what makes a journal
trustworthy across a reboot. The boot id is written with every reservation and the first
reservation of a run drops `"clean"`: the file always names the boot of the last run that
may have handed out ids below N (a run that continues without writing the file is on the boot
the file already names).

The directory is the ingest's (capture.user), group of the web user, mode 2750: files made in
it (mode 0640) take the web user's group, so the web workers read the sensor table, nobody else.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from leireye.fleet.model import FleetError

CENTRAL_DIR: Final = "central"
IDS_FILE: Final = "central/ids.json"
RESERVE: Final = 1 << 20
BOOT_ID: Final = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class Checkpoint:
    """`ids.json`: no id at or above `next_id` was handed out; `clean`: the last run stopped
    cleanly (then `next_id` is exactly the id after its last one, its journal on disk);
    `boot_id`: the kernel boot it ran on ("" unknown)."""

    next_id: int = 1
    clean: bool = False
    boot_id: str = ""


def boot_id() -> str:
    """This kernel boot's id ("" where /proc does not say: never the same as a saved one)."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def prepare_central_dir(state_dir: Path, writer: tuple[int, int] | None) -> Path:
    """`<state_dir>/central`, owned by `writer` (capture.user, web.user's group) with mode 2750
    when running as root; the supervisor calls it before the ingest starts."""
    path = state_dir / CENTRAL_DIR
    path.mkdir(parents=True, exist_ok=True, mode=0o750)
    if os.geteuid() == 0 and writer is not None:
        os.chown(path, *writer)
        os.chmod(path, 0o2750)
    return path


def read_next_id(state_dir: Path) -> int:
    """The first id the next ring may hand out (1 when the central never ran)."""
    return read_checkpoint(state_dir).next_id


def read_checkpoint(state_dir: Path) -> Checkpoint:
    """`ids.json` (the first run's defaults when it does not exist)."""
    path = state_dir / IDS_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return Checkpoint()
    except (OSError, ValueError) as exc:
        raise FleetError(f"{path}: {exc}: fix or remove it (ids would start over)") from None
    next_id = data.get("next_id") if isinstance(data, dict) else None
    if not isinstance(next_id, int) or next_id < 1:
        raise FleetError(f"{path}: no valid next_id: fix or remove it (ids would start over)")
    boot = data.get("boot_id")
    return Checkpoint(next_id, data.get("clean") is True, boot if isinstance(boot, str) else "")


def write_next_id(state_dir: Path, next_id: int, *, clean: bool = False, boot: str = "") -> None:
    path = state_dir / IDS_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    data: dict[str, object] = {"next_id": next_id}
    if clean:
        data["clean"] = True
    if boot:
        data["boot_id"] = boot
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(data))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class IdCheckpoint:
    """The ingest's side: `reserve(last)` before writing ids up to `last`, `settle(next)` on a
    clean stop."""

    def __init__(self, state_dir: Path, first_free: int) -> None:
        self.state_dir = state_dir
        self.boot = boot_id()
        self.on_disk = max(read_next_id(state_dir), 1)
        if first_free > self.on_disk:  # the ring is ahead of the file: never hand out less
            self._write(first_free)

    def reserve(self, last_id: int) -> None:
        if last_id >= self.on_disk:
            self._write(last_id + 1 + RESERVE)

    def settle(self, next_id: int) -> None:
        """A clean stop: `next_id` is exactly the id after the last one handed out."""
        self._write(next_id, clean=True)

    def _write(self, next_id: int, *, clean: bool = False) -> None:
        write_next_id(self.state_dir, next_id, clean=clean, boot=self.boot)
        self.on_disk = next_id
