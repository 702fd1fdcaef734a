"""leireye.fleet.lab, the demo's and the end-to-end tests' fleet: its sites carry real traffic,
its sensors serve, and closing it leaves nothing behind."""

from __future__ import annotations

import random
from pathlib import Path

import dpkt
import pytest

from leireye.fleet.lab import Lab, dns_answer
from leireye.fleet.labtraffic import dns_query
from tests.netns import skip_unless_root
from tests.waiting import scaled, wait_for


def test_dns_query_and_answer_are_real_dns() -> None:
    rng = random.Random(1)
    for _ in range(50):
        query = dpkt.dns.DNS(dns_query(rng))
        assert query.qr == dpkt.dns.DNS_Q and len(query.qd) == 1
        answer_bytes = dns_answer(bytes(query))
        assert answer_bytes is not None
        answer = dpkt.dns.DNS(answer_bytes)
        assert answer.qr == dpkt.dns.DNS_R and answer.rcode == dpkt.dns.DNS_RCODE_NXDOMAIN
        assert answer.id == query.id and answer.qd[0].name == query.qd[0].name
    assert dns_answer(b"short") is None


def _link_rx(ifname: str) -> int:
    return int(Path(f"/sys/class/net/{ifname}/statistics/rx_packets").read_text())


@pytest.mark.root
@pytest.mark.slow
@skip_unless_root
def test_lab_sites_sensors_and_teardown(fleet_lab: Lab) -> None:
    with fleet_lab as lab:  # closing twice (here, then the fixture) is harmless
        lab.start_nats()
        sites = [lab.add_site(), lab.add_site()]
        assert sites[0].host_ip != sites[1].host_ip
        traffic = [lab.start_traffic(site, rate=30, seconds=120) for site in sites]
        sensors = [lab.start_sensor(f"s{k}", site) for k, site in enumerate(sites)]
        for sensor in sensors:
            lab.wait_web(sensor, scaled(90))
        for site in sites:  # each site's clients reach its servers across its own veth
            wait_for(lambda s=site: s.dns_answered > 3, 30, f"DNS answers on {site.ns}")
            assert _link_rx(site.host_if) > 10
        assert lab.exited() is None
        children = [*traffic, *sensors]
    assert all(child.proc.poll() is not None for child in children)
    assert lab.nats is not None and not lab.nats.running
    for site in sites:
        assert not Path("/run/netns", site.ns).exists()
        assert not Path("/sys/class/net", site.host_if).exists()
