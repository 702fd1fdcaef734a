"""The flow process in a real sensor: it runs as the capture user, its view is readable by
another process, and a SIGKILL under load is survived (restarted, the loss counted)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from leireye.flows.view import ENDED, STARTED, FlowView
from tests.accounts import users_yaml
from tests.http import Http
from tests.sensor import Sensor, SensorFactory
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root"),
]
DATA = Path(__file__).resolve().parents[1] / "data"
# The whole of mixed.pcap again and again as fast as it goes: load, and flows of every kind
# (each pass ends the flows of the one before: the same 5-tuples, torn down, then a new SYN).
REPLAY = (
    f"capture: {{pcap: {DATA / 'mixed.pcap'}, replay: {{speed: max, loop: true}}}}\n"
    "flows: {update_ms: 100, event_interval_s: 0.5, tcp_close_s: 0}\n"
)


def _pid(sensor_log: list[str], after: int = 0) -> int:
    started = [line for line in sensor_log if "flows started pid=" in line]
    return int(started[-1].split("=")[-1]) if len(started) > after else 0


def test_flow_process_runs_and_its_view_is_readable(sensor_factory: SensorFactory) -> None:
    sensor = sensor_factory(config=REPLAY)
    pid = wait_for(lambda: _pid(sensor.lines), 20, "the flow process to start")
    view = wait_for(lambda: _attach(f"{sensor.name}-flows"), 20, "the flow view")
    try:
        wait_for(lambda: view.snapshot()[2]["ended"] > 100, 30, "flows ended")
        counters = view.snapshot()[2]
        assert counters["records"] > 0 and counters["writer_pid"] == pid
        assert {f.transport for f in view.active()} <= {"TCP", "UDP", "ICMP", "ICMPv6"}
        assert "10.77.1.2" in {h.ip for h in view.hosts()}
        assert any("example.org" in h.names for h in view.hosts())
        events = view.events_after(0, 100_000)
        kinds = set(events.kinds.tolist())
        assert {STARTED, ENDED} <= kinds, kinds
        assert len(events.seqs) + events.missed == events.cursor
        # the flow process runs as the capture user, like stats
        uid = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0]
        assert int(uid) != 0
        wait_for(lambda: "flows active=" in sensor.log, 20, "the flow process's log line")
    finally:
        view.close()
    assert sensor.stop(signal.SIGTERM) == 0, sensor.log
    assert sensor.segments() == []


def test_sigkill_under_load_restarts_and_counts_the_loss(sensor_factory: SensorFactory) -> None:
    sensor = sensor_factory(config=REPLAY, users=users_yaml({"vic": ("VIEWER", "viewer-pw-9")}))
    first = wait_for(lambda: _pid(sensor.lines), 20, "the flow process to start")
    view = wait_for(lambda: _attach(f"{sensor.name}-flows"), 20, "the flow view")
    try:
        wait_for(lambda: view.snapshot()[2]["active_flows"] > 0, 30, "active flows")
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: _pid(sensor.lines, after=1), 20, "a restarted flow process")
        assert second != first
        wait_for(lambda: view.snapshot()[2]["starts"] == 2, 20, "the new writer to publish")
        counters = view.snapshot()[2]
        assert counters["writer_pid"] == second
        assert counters["lost_on_restart"] > 0  # the flows active in the killed process
        records = counters["records"]
        wait_for(lambda: view.snapshot()[2]["records"] > records, 20, "records read again")
        assert "flows died" in sensor.log
        shown = metrics(sensor)  # the loss is reported where operators look, not only logged
        lost = counters["lost_on_restart"]
        assert f"leireye_flows_lost_on_restart_total {lost}" in shown, shown
        assert "leireye_flows_ring_lost_total " in shown
    finally:
        view.close()
    assert sensor.stop(signal.SIGTERM) == 0, sensor.log
    assert sensor.segments() == []


def metrics(sensor: Sensor) -> str:
    return Http(sensor.web_port()).login("vic", "viewer-pw-9").metrics()


def _attach(name: str) -> FlowView | None:
    try:
        return FlowView.attach(name)
    except Exception:  # not created yet
        return None
