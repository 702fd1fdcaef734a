"""Two `ping`s at once between the same two hosts are two flows: a real sensor captures them on
a veth pair between the root namespace and a test namespace, and its flow process keys each by
its ICMP identifier (IPv4 and IPv6)."""

from __future__ import annotations

import shutil
import signal
import subprocess

import pytest

from leireye.flows.model import Flow
from leireye.flows.view import FlowView
from tests.netns import VethPair, skip_unless_root, veth_pair
from tests.sensor import SensorFactory
from tests.waiting import scaled, wait_for

pytestmark = [pytest.mark.root, skip_unless_root]
# (IP version, identifier, echo requests): two pings at once per version
PINGS = ((4, 0x4C01, 5), (4, 0x4C02, 3), (6, 0x4C03, 4), (6, 0x4C04, 2))


def _attach(name: str) -> FlowView | None:
    try:
        return FlowView.attach(name)
    except Exception:  # not created yet
        return None


def _ping(pair: VethPair, version: int, ident: int, count: int) -> subprocess.Popen[str]:
    target = pair.ns_ip if version == 4 else pair.ns_ip6
    return subprocess.Popen(
        ["ping", f"-{version}", "-n", "-q", "-c", str(count), "-i", "0.2", "-e", str(ident),
         "-W", str(scaled(5)), target],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _pings(view: FlowView) -> dict[int, Flow]:
    """The echo flows (ICMPv6 neighbour or router messages, if any, have no identifier)."""
    return {f.icmp_id: f for f in view.active() if f.icmp_id is not None}


def test_two_concurrent_pings_are_two_flows(sensor_factory: SensorFactory) -> None:
    if shutil.which("ping") is None:
        pytest.skip("needs ping (iputils-ping)")
    with veth_pair(ipv6=True) as pair:
        sensor = sensor_factory(
            "--interface", pair.host_if, "--bpf", "icmp or icmp6",
            config="flows: {update_ms: 100, event_interval_s: 0.5}\n",
        )  # fmt: skip
        sensor.wait_capturing(sensor.status())
        view = wait_for(lambda: _attach(f"{sensor.name}-flows"), 20, "the flow view")
        try:
            procs = [_ping(pair, *ping) for ping in PINGS]  # all at once
            for proc, ping in zip(procs, PINGS, strict=True):
                out, _ = proc.communicate(timeout=scaled(30))
                assert proc.returncode == 0, (ping, out)
            want = {ident: count for _, ident, count in PINGS}

            def counted() -> dict[int, Flow] | None:
                found = _pings(view)
                done = {i: (f.orig_pkts, f.resp_pkts) for i, f in found.items()}
                return found if done == {i: (n, n) for i, n in want.items()} else None

            with sensor.explained():
                flows = wait_for(counted, 20, f"one flow per ping, {want}")
            for version, ident, _ in PINGS:
                flow = flows[ident]
                host, ns = (pair.host_ip, pair.ns_ip) if version == 4 else (
                    pair.host_ip6, pair.ns_ip6)  # fmt: skip
                assert (flow.transport, flow.orig_ip, flow.resp_ip) == (
                    "ICMP" if version == 4 else "ICMPv6", host, ns,
                )  # fmt: skip
                assert (flow.orig_port, flow.resp_port) == ((8, 0) if version == 4 else (128, 0))
            assert len({f.uid for f in flows.values()}) == len(PINGS)
        finally:
            view.close()
        assert sensor.stop(signal.SIGTERM) == 0, sensor.log
