"""`leireye watch` and `leireye stats` as real subprocesses against a real `leireye run`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from leireye.wire import PacketData
from tests.clientenv import PASSWORD, Live
from tests.lines import Lines
from tests.sensor import free_udp_port, send_udp
from tests.waiting import scaled, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root"),
]

CLI = [sys.executable, "-m", "leireye.cli"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    env = Live(tmp_path_factory.mktemp("watch"))
    yield env
    env.sensor.kill()


def env_with(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LEIREYE_TOKEN"}
    if token is not None:
        env["LEIREYE_TOKEN"] = token
    return env


def leireye(*args: str, token: str | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env_with(token),
                          timeout=scaled(30), **kw)  # type: ignore[call-overload, no-any-return]  # fmt: skip


def watch_then_send(live: Live, count: int, *args: str, token: str | None = None,
                    stdin: str | None = None) -> Lines:  # fmt: skip
    """`leireye watch ... --count N`; once its banner says the stream is live, `count` datagrams
    to the sensor's port; then its end."""
    watch = Lines([*CLI, "watch", "--url", live.url, *args, "--count", str(count)],
                  env=env_with(token), stdin=stdin)  # fmt: skip
    try:
        watch.wait_line(watch.err, "leireye: watching")
        send_udp(live.port, count, b"watch")
        code = watch.finish()
    finally:
        watch.stop()
    assert code == 0, f"{watch.err}\nsensor log:\n{live.sensor.log[-3000:]}"
    return watch


def test_watch_count_json_prints_that_many_packets(live: Live) -> None:
    watch = watch_then_send(live, 5, "--port", str(live.port), "--json", token=live.token())
    assert len(watch.out) == 5
    packets = [msgspec.json.decode(line, type=PacketData) for line in watch.out]
    assert all(p.dst_port == live.port and p.protocol == "UDP" for p in packets)
    ids = [p.id for p in packets]
    assert ids == list(range(ids[0], ids[0] + 5))


def test_watch_prints_tcpdump_lines_and_logs_in_with_a_password(live: Live) -> None:
    login = ["--user", "watcher", "--password-stdin"]
    watch = watch_then_send(live, 2, "--protocol", "UDP", "--dst", "127.0.0.0/8", *login,
                            stdin=PASSWORD + "\n")  # fmt: skip
    assert len(watch.out) == 2
    for line in watch.out:
        assert f" > 127.0.0.1.{live.port}: UDP length 47: " in line, line


def test_stats_prints_one_line_per_interval(live: Live) -> None:
    out = leireye("stats", "--url", live.url, "--interval-ms", "200", "--count", "2",
                  token=live.token())  # fmt: skip
    assert out.returncode == 0, f"{out.stderr}\nsensor log:\n{live.sensor.log[-3000:]}"
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all(" pkt/s " in line for line in lines)


@pytest.mark.parametrize("command", ["watch", "stats"])
def test_a_bad_token_exits_non_zero_with_one_clear_line(live: Live, command: str) -> None:
    out = leireye(command, "--url", live.url, token="garbage")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "leireye: authentication failed: Invalid or expired token"
    ]


def test_a_wrong_password_and_no_server_are_one_line_each(live: Live) -> None:
    out = leireye("watch", "--url", live.url, "--user", "watcher", "--password-stdin",
                  input="wrong\n")  # fmt: skip
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("leireye: authentication failed")
    nowhere = f"ws://127.0.0.1:{free_udp_port()}/ws/capture"
    out = leireye("watch", "--url", nowhere, token="t")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith(f"leireye: cannot connect to {nowhere}")
    out = leireye("watch", "--url", live.url)
    assert out.returncode == 2 and "no token" in out.stderr


def test_a_refused_filter_is_one_line_and_no_banner(live: Live) -> None:
    out = leireye("watch", "--url", live.url, "--src", "10.0.0.300", token=live.token())
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()], out.stderr
    assert out.stderr.startswith("leireye: subscribe refused: ") and "src_ip" in out.stderr


def test_ctrl_c_exits_cleanly(live: Live, tmp_path: Path) -> None:
    err = tmp_path / "stderr"
    env = {**os.environ, "LEIREYE_TOKEN": live.token()}
    with err.open("w") as stderr:
        proc = subprocess.Popen([*CLI, "watch", "--url", live.url], stdout=subprocess.DEVNULL,
                                stderr=stderr, env=env)  # fmt: skip
        try:
            wait_for(lambda: "watching" in err.read_text(), 20, "watch to subscribe")
            proc.send_signal(signal.SIGINT)
            code = proc.wait(scaled(10))
        finally:
            proc.kill()
            proc.wait()
    assert code in (0, 130)
    assert "Traceback" not in err.read_text(), err.read_text()
