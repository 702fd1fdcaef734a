"""A subprocess whose stdout and stderr lines a test reads as they come, so that it acts when the
program says it is ready (a banner once its stream is live), never after a guess."""

from __future__ import annotations

import subprocess
import threading
from typing import IO

from tests.waiting import scaled, wait_for


class Lines:
    def __init__(
        self,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        cwd: str | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
        )  # fmt: skip
        if stdin is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
            for pipe, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(pipe: IO[str], lines: list[str]) -> None:
        for line in pipe:
            lines.append(line.rstrip("\n"))

    def wait_line(self, lines: list[str], text: str, timeout: float = 20) -> str:
        """The first line of `lines` (`self.out` or `self.err`) containing `text`; fails at
        once if the program exits without printing it."""

        def found() -> str | None:
            exited = self.proc.poll() is not None
            line = next((line for line in list(lines) if text in line), None)
            if line is None and exited:
                for reader in self._readers:
                    reader.join(5)
                line = next((line for line in lines if text in line), None)
                if line is None:
                    raise AssertionError(f"exited {self.proc.returncode} without {text!r}: "
                                         f"{self.out[-20:]} {self.err[-20:]}")  # fmt: skip
            return line

        line = wait_for(found, timeout, repr(text))
        assert line is not None
        return line

    def finish(self, timeout: float = 30) -> int:
        """The exit code, once the program ended by itself (killed after `timeout`)."""
        try:
            return self.proc.wait(scaled(timeout))
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for reader in self._readers:
            reader.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
