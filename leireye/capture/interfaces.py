"""The host's network interfaces, as `GET /api/capture/interfaces` lists them.

Read from `ip -json address` (iproute2): name, state, flags, link type, MAC, addresses. Runs
unprivileged. `linktype` is the libpcap DLT a capture on the interface would deliver.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from leireye.errors import CaptureError

# iproute2 link_type -> libpcap DLT
_DLT = {"ether": 1, "loopback": 1, "none": 12, "ieee802.11": 105, "sit": 12, "ipip": 12}


def list_interfaces(ip: str = "ip") -> list[dict[str, Any]]:
    try:
        out = subprocess.run(
            [ip, "-json", "address", "show"], capture_output=True, text=True, timeout=5,
            check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise CaptureError(f"cannot list interfaces: {exc}") from None
    return parse_ip_json(out)


def parse_ip_json(text: str) -> list[dict[str, Any]]:
    try:
        links = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CaptureError(f"cannot list interfaces: unexpected `ip` output ({exc})") from None
    result = []
    for link in links if isinstance(links, list) else []:
        flags = [str(f) for f in link.get("flags", [])]
        link_type = str(link.get("link_type", ""))
        result.append(
            {
                "name": str(link.get("ifname", "")),
                "index": link.get("ifindex"),
                "up": "UP" in flags,
                "running": "LOWER_UP" in flags,
                "state": str(link.get("operstate", "UNKNOWN")).lower(),
                "flags": flags,
                "mtu": link.get("mtu"),
                "link_type": link_type,
                "linktype": _DLT.get(link_type),
                "mac": link.get("address"),
                "addresses": [
                    {
                        "family": "ipv6" if a.get("family") == "inet6" else "ipv4",
                        "address": a.get("local"),
                        "prefixlen": a.get("prefixlen"),
                    }
                    for a in link.get("addr_info", [])
                    if a.get("local")
                ],
            }
        )
    return result
