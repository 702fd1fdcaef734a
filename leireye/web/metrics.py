"""Prometheus text exposition format 0.0.4 (`render_metrics`), from typed `Metric`s.

    # HELP leireye_packets_total Packets captured since the stats process started.
    # TYPE leireye_packets_total counter
    leireye_packets_total 1567
    leireye_protocol_packets_total{protocol="TCP"} 1200

A misused API (a bad metric or label name, a counter not ending in `_total`, a name given twice)
raises ValueError: these are our bugs, not input from the network. Label values and help texts
may hold anything (interface names, BPF text) and are escaped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

MetricType = Literal["counter", "gauge"]
Sample = tuple[Mapping[str, str], int | float]


@dataclass(frozen=True)
class Metric:
    """One metric family: its samples are `(labels, value)` pairs (`{}` for no labels)."""

    name: str
    type: MetricType
    help: str
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        if self.type not in ("counter", "gauge"):
            raise ValueError(f"{self.name}: type must be counter or gauge, not {self.type!r}")
        if self.type == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name!r} must end in _total")
        for labels, _ in self.samples:
            for label in labels:
                if not _LABEL.match(label) or label.startswith("__"):
                    raise ValueError(f"{self.name}: invalid label name {label!r}")


def escape_label_value(value: str) -> str:
    """Backslash, double quote and newline escaped, as the format asks inside `"..."`."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Backslash and newline escaped (a HELP line has no quotes to protect)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: int | float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{escape_label_value(str(v))}"' for name, v in labels.items())
    return "{" + inner + "}"


def render_metrics(samples: Iterable[Metric]) -> str:
    """The exposition text of `samples`, in the order given, ending with a newline (empty text
    for no metrics). Serve it with CONTENT_TYPE."""
    lines: list[str] = []
    seen: set[str] = set()
    for metric in samples:
        if metric.name in seen:
            raise ValueError(f"metric {metric.name!r} given twice")
        seen.add(metric.name)
        lines.append(f"# HELP {metric.name} {escape_help(metric.help)}")
        lines.append(f"# TYPE {metric.name} {metric.type}")
        for labels, value in metric.samples:
            lines.append(f"{metric.name}{_labels(labels)} {format_value(value)}")
    return "".join(line + "\n" for line in lines)
