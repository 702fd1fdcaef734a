"""`leireye fleet-demo`: a fleet on this machine, to look at (as root; `make fleet-demo`).

    leireye fleet-demo [--sensors N] [--rate R] [--duration S] [--central-port P] [--dir D]
                       [--keep]

Starts a nats-server with JetStream (its store in a temporary directory), N network namespaces
each with traffic of its own (HTTP, DNS, refused connections), N sensors (`leireye run`, fleet
on, each capturing on its namespace's veth) and one central (`leireye central`), then prints
the central's address and where its `admin` password is. Ctrl-C (or `--duration` seconds)
stops everything and deletes the namespaces and the directory (kept with `--keep` or
`--dir`).
The parts are leireye.fleet.lab's; docs/fleet-deploy.md says how a real fleet is deployed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from leireye.accounts.users import FIRST_ADMIN_PASSWORD_FILE
from leireye.exitcodes import ExitCode
from leireye.fleet.lab import Child, Lab
from leireye.fleet.model import FleetError


def tell(text: str) -> None:
    print(text, flush=True)


def add_fleet_demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "fleet-demo",
        help="a fleet on this machine: NATS, namespaces with traffic, sensors, a central (root)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--sensors", type=int, default=3, choices=range(1, 9), metavar="N",
                      help="sensors, each on a namespace of its own (1-8; default 3)")  # fmt: skip
    demo.add_argument("--rate", type=float, default=20.0,
                      help="traffic actions per second of the first site; site k gets k times"
                      " as many (default 20)")  # fmt: skip
    demo.add_argument("--duration", type=float, default=3600.0,
                      help="stop by itself after this many seconds (default 3600)")  # fmt: skip
    demo.add_argument("--central-port", type=int, default=0,
                      help="the central's web port (default: a free one)")  # fmt: skip
    demo.add_argument("--dir", help="where configs, logs, states and the NATS store go"
                      " (default: a new directory under /tmp)")  # fmt: skip
    demo.add_argument("--keep", action="store_true", help="keep the directory at the end")
    demo.set_defaults(func=fleet_demo)


def fleet_demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print(
            "leireye fleet-demo must run as root: it creates network namespaces and veth"
            " pairs, and its sensors capture on them (sudo make fleet-demo)",
            file=sys.stderr,
        )
        return ExitCode.FAILED
    if shutil.which("ip") is None:
        raise FleetError("leireye fleet-demo needs the `ip` tool (iproute2)")
    if args.rate <= 0 or args.duration <= 0:
        raise FleetError("--rate and --duration must be positive")
    if args.dir:
        directory = Path(args.dir)
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    else:
        directory = Path(tempfile.mkdtemp(prefix="leireye-fleet-demo-", dir="/tmp"))
        directory.chmod(0o755)  # the web workers (web.user) read their state below it

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Lab(directory) as lab:
            code = _run(lab, args, stop)
            tell("stopping the fleet demo...")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not args.keep and not args.dir:
            _remove(directory)
    if args.keep or args.dir:
        tell(f"configs, logs and states are in {directory}")
    return code


def _remove(directory: Path) -> None:
    try:
        shutil.rmtree(directory)
    except OSError as exc:
        tell(f"could not remove {directory}: {exc}")


def _run(lab: Lab, args: argparse.Namespace, stop: threading.Event) -> int:
    tell(f"fleet demo in {lab.directory}: starting NATS, {args.sensors} sites and sensors...")
    nats = lab.start_nats()
    names = [f"sensor{k + 1}" for k in range(args.sensors)]
    sensors: list[Child] = []
    for k, name in enumerate(names):
        site = lab.add_site()
        lab.start_traffic(site, rate=args.rate * (k + 1), seconds=args.duration + 60)
        sensors.append(lab.start_sensor(name, site))
    central = lab.start_central(names, web_port=args.central_port or None)
    for child in [*sensors, central]:
        if stop.is_set():
            return ExitCode.INTERRUPTED
        lab.wait_web(child)
    password = central.state_dir / FIRST_ADMIN_PASSWORD_FILE if central.state_dir else None
    lines = [
        "",
        "LeirEye fleet demo: running",
        f"  central     {central.url}",
        f"  admin       user 'admin', password in {password} (root only)",
        f"  NATS        {nats.url} (JetStream, store {nats.store_dir})",
    ]
    for site, sensor in zip(lab.sites, sensors, strict=True):
        lines.append(
            f"  {sensor.name:<11} {sensor.url}  captures on {site.host_if}"
            f" (namespace {site.ns}: {site.ns_ip} -> {site.host_ip})"
        )
    lines += [f"  logs        {lab.directory}/*.log", "", "Ctrl-C stops everything.", ""]
    tell("\n".join(lines))
    deadline = time.monotonic() + args.duration
    while not stop.wait(1.0):
        gone = lab.exited()
        if gone is not None:
            tell(f"{gone.name} exited ({gone.proc.returncode}); its log ends:\n{gone.log_tail()}")
            return ExitCode.FAILED
        if time.monotonic() > deadline:
            tell(f"--duration {args.duration:.0f}s reached")
            return ExitCode.OK
    return ExitCode.INTERRUPTED
