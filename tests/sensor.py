"""A real `leireye run` for integration tests: start it, wait for it, read its log, stop it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from leireye.privileges import CHECK_IMPORTS_ENV, LATE_IMPORT
from leireye.ring.shm import SHM_DIR
from leireye.ring.status import StatusBlock
from tests.waiting import scaled, wait_for


class Sensor:
    """A `leireye run` subprocess, its stderr collected line by line."""

    def __init__(
        self,
        tmp_path: Path,
        *args: str,
        config: str = "",
        users: str = "",
        command: str = "run",
        state_dir: Path | None = None,
    ) -> None:
        """`command`: `run`, or `central` (a fleet central); `state_dir`: one to reuse (a
        restart), else a new one."""
        self.name = f"leireye-t{uuid.uuid4().hex[:10]}"
        self.config_path = config_path = tmp_path / f"{self.name}.yaml"
        # The web workers run as `web.user`: their state must not sit under pytest's 0700 tmp.
        # The supervisor makes it 0750 root, group of the web user.
        if state_dir is None:
            state_dir = Path(tempfile.mkdtemp(prefix="leireye-test-", dir="/tmp"))
            state_dir.chmod(0o755)
        self.state_dir = state_dir
        if users:
            (state_dir / "users.yaml").write_text(users)
            (state_dir / "users.yaml").chmod(0o600)  # as `leireye user` writes it
        base = (
            f"state_dir: {state_dir}\n"
            "stats: {log_interval_s: 0.2}\n"
            "web: {port: 0, workers: 1}\n"
        )
        config_path.write_text(base + config)
        cmd = [sys.executable, "-m", "leireye.cli", command, "-c", str(config_path)]
        cmd += ["--name", self.name, *args]
        self.proc = subprocess.Popen(
            cmd,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            env={**os.environ, CHECK_IMPORTS_ENV: "1"},  # see `late_imports`
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def late_imports(self) -> list[str]:
        """Modules a process imported after dropping privileges (logged because the tests set
        LEIREYE_CHECK_IMPORTS): each one would crash that process where the installation is
        unreadable by the unprivileged user, e.g. a clone under /root."""
        return [line for line in list(self.lines) if LATE_IMPORT in line]

    def notable(self, limit: int = 40) -> str:
        """The log lines a failure report needs: warnings, errors and process starts and exits
        (a restart explains a reset connection), the last `limit` of them."""
        keep = [line for line in list(self.lines) if _NOTABLE.search(line)]
        return "\n".join(keep[-limit:]) or "(no warnings, errors or restarts)"

    @contextlib.contextmanager
    def explained(self) -> Iterator[None]:
        """Re-raise a failure inside with the sensor's notable log lines in its message: CI
        shows a failure's one-line summary, and a bare `ConnectionResetError` there says nothing
        of which process went away."""
        try:
            yield
        except Exception as exc:
            raise AssertionError(
                f"{type(exc).__name__}: {exc}\n--- sensor log ---\n{self.notable()}"
            ) from exc

    def web_port(self, timeout: float = 30) -> int:
        """The port the web server listens on (read back from the log: tests use port 0)."""

        def port() -> int:
            if self.proc.poll() is not None:
                raise AssertionError(f"sensor exited early:\n{self.log}")
            for line in self.lines:
                if match := _LISTENING.search(line):
                    return int(match.group(1))
            return 0

        return wait_for(port, timeout, "the web server to listen")

    def segments(self) -> list[str]:
        return sorted(p.name for p in SHM_DIR.glob(f"{self.name}-*"))

    def status(self) -> StatusBlock:
        block: StatusBlock = wait_for(
            lambda: (
                (SHM_DIR / f"{self.name}-status").exists()
                and _attach(StatusBlock, f"{self.name}-status")
            ),
            20,
            "the status segment",
        )
        return block

    def wait_capturing(self, status: StatusBlock, timeout: float = 20) -> int:
        def capturing() -> int:
            if self.proc.poll() is not None:
                raise AssertionError(f"sensor exited early:\n{self.log}")
            st = status.read()
            return st.pid if st.capturing and st.state == "capturing" else 0

        return wait_for(capturing, timeout, "capture to start")

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(scaled(2.0) + 0.5)
        finally:
            self._reader.join(5)

    def kill(self) -> None:
        """Stop the sensor whatever state it is in: SIGTERM, then SIGKILL to its whole process
        group (children included, so nothing keeps the log pipe open)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(scaled(5))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)
        for name in self.segments():  # left only when the supervisor itself had to be killed
            (SHM_DIR / name).unlink(missing_ok=True)
        if (late := self.late_imports()) and sys.exc_info()[0] is None:
            raise AssertionError("imports after the privilege drop:\n" + "\n".join(late))


def _attach(kind: type, name: str) -> object | None:
    try:
        return kind.attach(name)  # type: ignore[attr-defined, no-any-return]
    except Exception:  # the segment may exist before its header is written
        return None


SensorFactory = Callable[..., Sensor]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def send_udp(port: int, count: int, payload: bytes = b"leireye", rate: float = 0) -> None:
    """`count` datagrams to 127.0.0.1:`port`, at `rate` per second (0: as fast as possible)."""
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(count):
            if rate and i % 100 == 0:
                ahead = start + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing the sender, not waiting on anything
            s.sendto(payload, ("127.0.0.1", port))


_NOTABLE = re.compile(r" (WARNING|ERROR|CRITICAL) | started pid=| exited|Traceback")
_LISTENING = re.compile(r"web: listening on https?://\S+:(\d+) ")
