"""A fleet on one machine: a nats-server, network namespaces with traffic of their own, sensors
that capture on them, and a central. `leireye fleet-demo` is this; the fleet's end-to-end tests
reuse it.

    with Lab(directory) as lab:                       # everything stopped, namespaces deleted
        nats = lab.start_nats()
        site = lab.add_site()                         # a namespace, a veth pair, its servers
        lab.start_traffic(site, rate=20)              # real clients inside the namespace
        s1 = lab.start_sensor("s1", site)             # `leireye run`, capturing on site.host_if
        central = lab.start_central(["s1"])           # `leireye central`
        lab.wait_web(central)

A site is a namespace `le-fleet-<pid>-<n>` joined to the root namespace by a veth pair: the
namespace's end `ns_ip`, the root's end `host_ip`, a /30 of 10.77.64.0/18 that no interface
of the machine uses yet (tests/netns.py takes its pairs from 10.77.128.0/17). In the root
namespace, bound to `host_ip` only, this process serves HTTP and DNS for the site's clients
(leireye.fleet.labtraffic), so every packet of a site crosses its veth and nothing leaves the
machine. IPv6 is off on the pair: the link carries the site's traffic alone.

Children (nats-server, traffic, sensors, central) start in sessions of their own, so a Ctrl-C
in the terminal reaches only the demo, which stops them in order: the central and sensors
first (SIGTERM, their clean shutdown), then the traffic, then NATS. Each child also gets
SIGTERM from the kernel if this process dies (PR_SET_PDEATHSIG). Configs and logs (0600) go
to `directory`; each sensor's and the central's state_dir is `directory/<name>`.
"""

from __future__ import annotations

import contextlib
import copy
import http.server
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import yaml

from leireye.config import parse_config
from leireye.fleet.labtraffic import DNS_PORT, HTTP_PORT
from leireye.fleet.model import FleetError
from leireye.fleet.natsserver import NatsServer, die_with_parent, free_port

LAB_NET: Final = ipaddress.IPv4Network("10.77.64.0/18")
LEIREYE: Final = (sys.executable, "-m", "leireye.cli")
CMD_TIMEOUT: Final = 20.0
WEB_READY_S: Final = 90.0
STOP_TIMEOUT: Final = 15.0
BODY_MAX: Final = 1 << 20


def _ip(*args: str) -> str:
    res = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False
    )
    if res.returncode != 0:
        raise FleetError(f"ip {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout


def _used_blocks() -> set[ipaddress.IPv4Network]:
    used = set()
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        parts = line.split()
        if "inet" in parts:
            used.add(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    return used


def _free_block() -> ipaddress.IPv4Network:
    used = _used_blocks()
    for block in LAB_NET.subnets(new_prefix=30):
        if not any(block.overlaps(other) for other in used):
            return block
    raise FleetError(f"no free /30 left in {LAB_NET}")


class _Answers(http.server.BaseHTTPRequestHandler):
    """GET /bytes/N: N bytes (at most BODY_MAX). Logs nothing."""

    def do_GET(self) -> None:
        _, _, size = self.path.rpartition("/")
        body = b"x" * min(int(size) if size.isdigit() else 0, BODY_MAX)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def dns_answer(query: bytes) -> bytes | None:
    """NXDOMAIN for a query (its id and question kept); None for anything shorter than a
    header."""
    if len(query) < 12:
        return None
    return query[:2] + b"\x81\x83" + query[4:6] + b"\x00\x00\x00\x00\x00\x00" + query[12:]


@dataclass
class Site:
    """A namespace joined to the root namespace by a veth pair, and its servers."""

    index: int
    ns: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    _http: http.server.ThreadingHTTPServer | None = None
    _dns: socket.socket | None = None
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    dns_answered: int = 0

    def create(self, prefixlen: int) -> None:
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if,
            "netns", self.ns)  # fmt: skip
        for ns, ifname in ((None, self.host_if), (self.ns, self.ns_if)):
            cmd = ["sysctl", "-q", "-w", f"net.ipv6.conf.{ifname}.disable_ipv6=1"]
            cmd = ["ip", "netns", "exec", ns, *cmd] if ns else cmd
            subprocess.run(cmd, capture_output=True, timeout=CMD_TIMEOUT, check=True)
        _ip("addr", "add", f"{self.host_ip}/{prefixlen}", "dev", self.host_if)
        _ip("-n", self.ns, "addr", "add", f"{self.ns_ip}/{prefixlen}", "dev", self.ns_if)
        _ip("-n", self.ns, "link", "set", "lo", "up")
        _ip("-n", self.ns, "link", "set", self.ns_if, "up")
        _ip("link", "set", self.host_if, "up")

    def serve(self) -> None:
        """HTTP and DNS on `host_ip`, in threads of this process."""
        self._http = http.server.ThreadingHTTPServer((self.host_ip, HTTP_PORT), _Answers)
        self._http.daemon_threads = True
        self._dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._dns.bind((self.host_ip, DNS_PORT))
        self._dns.settimeout(0.2)
        for name, target in (("http", self._http.serve_forever), ("dns", self._answer_dns)):
            thread = threading.Thread(target=target, name=f"{self.ns}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _answer_dns(self) -> None:
        assert self._dns is not None
        while not self._stop.is_set():
            try:
                query, peer = self._dns.recvfrom(4096)
            except TimeoutError:
                continue
            answer = dns_answer(query)
            if answer is not None:
                self._dns.sendto(answer, peer)
                self.dns_answered += 1

    def destroy(self) -> None:
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for thread in self._threads:
            thread.join(CMD_TIMEOUT)
        if self._dns is not None:
            self._dns.close()
        # anything still inside the namespace (ours: its name carries our pid)
        pids = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True,
                              timeout=CMD_TIMEOUT, check=False).stdout.split()  # fmt: skip
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True,
                       timeout=CMD_TIMEOUT, check=False)  # fmt: skip
        if Path("/sys/class/net", self.host_if).exists():
            subprocess.run(["ip", "link", "del", self.host_if], capture_output=True,
                           timeout=CMD_TIMEOUT, check=False)  # fmt: skip


@dataclass
class Child:
    """A process the lab started: its name, log and, for a sensor or the central, web port
    and state directory."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    web_port: int | None = None
    state_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class Lab:
    """Owns everything it starts; `close()` (or leaving the `with`) stops it all in order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.tag = f"{os.getpid()}"
        self.nats: NatsServer | None = None
        self.sites: list[Site] = []
        self.traffic: list[Child] = []
        self.children: list[Child] = []  # sensors and the central
        self.closed = False

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- parts -----------------------------------------------------------------------------------

    def start_nats(self, max_file_store: str = "4GB") -> NatsServer:
        """JetStream reserves each stream's max_bytes against max_file_store when the stream is
        made ("insufficient storage resources" past it): 4 GB holds the four 0.1 GB streams of
        up to ten sensors."""
        server = NatsServer("nats", self.directory / "nats", max_file_store=max_file_store)
        self.nats = server
        server.start()
        return server

    def nats_servers(self) -> list[str]:
        if self.nats is None:
            raise FleetError("start NATS first (start_nats), or pass the servers")
        return [self.nats.url]

    def add_site(self) -> Site:
        index = len(self.sites)
        block = _free_block()
        hosts = list(block.hosts())
        pid = os.getpid()
        site = Site(
            index,
            ns=f"le-fleet-{pid}-{index}",
            host_if=f"lef{pid:x}h{index}"[:15],
            ns_if=f"lef{pid:x}n{index}"[:15],
            host_ip=str(hosts[0]),
            ns_ip=str(hosts[1]),
        )
        self.sites.append(site)  # before create: close() removes a half-made one too
        site.create(block.prefixlen)
        site.serve()
        return site

    def _spawn(self, name: str, cmd: list[str]) -> Child:
        log_path = self.directory / f"{name}.log"
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: die_with_parent(signal.SIGTERM),
            )
        return Child(name, proc, log_path)

    def start_traffic(
        self, site: Site, rate: float = 20.0, seconds: float = 3600.0, seed: int | None = None
    ) -> Child:
        """Clients inside `site`'s namespace (leireye.fleet.labtraffic), `rate` actions/s."""
        cmd = ["ip", "netns", "exec", site.ns, sys.executable, "-m", "leireye.fleet.labtraffic",
               site.host_ip, "--rate", str(rate), "--seconds", str(seconds),
               "--seed", str(site.index if seed is None else seed)]  # fmt: skip
        child = self._spawn(f"traffic-{site.index}", cmd)
        self.traffic.append(child)
        return child

    def _config(self, name: str, data: dict[str, Any]) -> Path:
        """Validate `data` as a config (a bad key fails here, naming it) and write it."""
        parse_config(data)
        path = self.directory / f"{name}.yaml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            yaml.safe_dump(data, out, sort_keys=False)
        return path

    def _state_dir(self, name: str) -> Path:
        # the web workers run as web.user: their state must not sit under a 0700 directory
        path = self.directory / name
        path.mkdir(mode=0o755, exist_ok=True)
        return path

    def sensor_config(
        self, name: str, site: Site, web_port: int, nats_servers: list[str]
    ) -> dict[str, Any]:
        return {
            "state_dir": str(self._state_dir(name)),
            "capture": {"interface": site.host_if},
            "ring": {"name": f"leireye-lab{self.tag}-{name}", "capacity": 65536},
            "store": {"max_gb": 0.25, "file_mb": 64},
            "history": {"max_gb": 0.25},
            "web": {"port": web_port, "workers": 1},
            "fleet": {
                "enabled": True,
                "sensor": name,
                "nats": {"servers": nats_servers},
                "streams": {"max_age_h": 1.0, "max_gb": 0.1},
            },
        }

    def central_config(
        self, sensors: list[str], web_port: int, nats_servers: list[str]
    ) -> dict[str, Any]:
        return {
            "state_dir": str(self._state_dir("central")),
            "ring": {"name": f"leireye-lab{self.tag}-central", "capacity": 262144},
            "store": {"max_gb": 0.5, "file_mb": 64},
            "history": {"max_gb": 0.5},
            "web": {"port": web_port, "workers": 1},
            "central": {"enabled": True, "nats": {"servers": nats_servers}, "sensors": sensors},
        }

    def start_sensor(
        self,
        name: str,
        site: Site,
        web_port: int | None = None,
        nats_servers: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Child:
        """`leireye run` with a generated config: fleet on, sensor `name`, capturing on the
        site's veth; `extra` is merged into the config (a test's own keys)."""
        port = web_port or free_port()
        data = self.sensor_config(name, site, port, nats_servers or self.nats_servers())
        path = self._config(name, deep_merge(data, extra or {}))
        child = self._spawn(name, [*LEIREYE, "run", "-c", str(path)])
        child.web_port, child.state_dir = port, Path(data["state_dir"])
        self.children.append(child)
        return child

    def start_central(
        self,
        sensors: list[str],
        web_port: int | None = None,
        nats_servers: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Child:
        """`leireye central` with a generated config following `sensors`."""
        port = web_port or free_port()
        data = self.central_config(sensors, port, nats_servers or self.nats_servers())
        path = self._config("central", deep_merge(data, extra or {}))
        child = self._spawn("central", [*LEIREYE, "central", "-c", str(path)])
        child.web_port, child.state_dir = port, Path(data["state_dir"])
        self.children.append(child)
        return child

    # -- watching --------------------------------------------------------------------------------

    def wait_web(self, child: Child, timeout: float = WEB_READY_S) -> None:
        """Until `child`'s GET /health answers 200; FleetError with its log if it exits or
        stays silent for `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if child.proc.poll() is not None:
                raise FleetError(
                    f"{child.name} exited ({child.proc.returncode}):\n{child.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{child.url}/health", timeout=2.0) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise FleetError(f"{child.name} not serving after {timeout:.0f}s")
            time.sleep(0.2)

    def exited(self) -> Child | None:
        """The first sensor, central or traffic client that has exited, if any."""
        return next((c for c in [*self.children, *self.traffic] if c.proc.poll() is not None), None)

    # -- stopping --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every child (SIGTERM, SIGKILL after STOP_TIMEOUT) in order, delete the sites.
        A second call does nothing."""
        if self.closed:
            return
        self.closed = True
        for group in (self.children, self.traffic):
            for child in group:
                if child.proc.poll() is None:
                    child.proc.terminate()
            for child in group:
                try:
                    child.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait(STOP_TIMEOUT)
        if self.nats is not None:
            self.nats.stop()
        for site in self.sites:
            site.destroy()
