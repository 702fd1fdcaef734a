"""Prometheus text format 0.0.4: rendered metrics parse back line by line, label values and help
texts are escaped, and misuse raises."""

from __future__ import annotations

import math
import re

import pytest

from leireye.web.metrics import (
    CONTENT_TYPE,
    Metric,
    escape_label_value,
    format_value,
    render_metrics,
)

HELP = re.compile(r"# HELP (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*) (?P<text>(?:[^\\\n]|\\\\|\\n)*)\Z")
TYPE = re.compile(r"# TYPE (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*) (?P<type>counter|gauge)\Z")
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE = re.compile(
    rf"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{{(?P<labels>{LABEL}(?:,{LABEL})*)\}})? "
    r"(?P<value>[-+]?(?:[0-9.e+-]+|Inf|NaN))\Z"
)
PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), text)


def parse(text: str) -> dict[str, dict[str, object]]:
    """A tiny parser: every line must match HELP, TYPE or a sample of the declared family."""
    families: dict[str, dict[str, object]] = {}
    current = None
    assert text.endswith("\n")
    for line in text[:-1].split("\n"):
        if m := HELP.match(line):
            current = m["name"]
            families[current] = {"help": _unescape(m["text"]), "samples": []}
        elif m := TYPE.match(line):
            assert m["name"] == current
            families[current]["type"] = m["type"]
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            assert m["name"] == current
            labels = {k: _unescape(v) for k, v in PAIR.findall(m["labels"] or "")}
            families[current]["samples"].append((labels, float(m["value"])))  # type: ignore[attr-defined]
    return families


def test_render_and_parse_back() -> None:
    metrics = [
        Metric("leireye_packets_total", "counter", "Packets seen.", [({}, 1567)]),
        Metric(
            "leireye_protocol_packets_total",
            "counter",
            "Packets by protocol.",
            [({"protocol": "TCP"}, 1200), ({"protocol": "ICMPv6"}, 3)],
        ),
        Metric("leireye_capturing", "gauge", "1 while capturing.", [({"interface": "eth0"}, True)]),
        Metric("leireye_ring_fill", "gauge", "Ring fill ratio.", [({}, 0.25)]),
        Metric("leireye_empty", "gauge", "No samples yet."),
    ]
    text = render_metrics(metrics)
    assert text.startswith(
        "# HELP leireye_packets_total Packets seen.\n"
        "# TYPE leireye_packets_total counter\n"
        "leireye_packets_total 1567\n"
    )
    assert 'leireye_protocol_packets_total{protocol="ICMPv6"} 3\n' in text
    assert 'leireye_capturing{interface="eth0"} 1\n' in text
    families = parse(text)
    assert list(families) == [m.name for m in metrics]
    assert families["leireye_protocol_packets_total"] == {
        "help": "Packets by protocol.",
        "type": "counter",
        "samples": [({"protocol": "TCP"}, 1200.0), ({"protocol": "ICMPv6"}, 3.0)],
    }
    assert families["leireye_ring_fill"]["samples"] == [({}, 0.25)]
    assert families["leireye_empty"]["samples"] == []
    assert render_metrics([]) == ""
    assert "version=0.0.4" in CONTENT_TYPE


HOSTILE = 'a\\b"c\nd} x="y" 1\n# TYPE evil counter'


def test_label_values_and_help_are_escaped() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    metric = Metric(
        "leireye_bpf_info", "gauge", "BPF filter \\ with\nnewline", [({"bpf": HOSTILE}, 1)]
    )
    text = render_metrics([metric])
    assert text.count("\n") == 3  # HELP, TYPE, one sample: nothing injected
    assert '{bpf="a\\\\b\\"c\\nd} x=\\"y\\" 1\\n# TYPE evil counter"}' in text
    assert "# HELP leireye_bpf_info BPF filter \\\\ with\\nnewline\n" in text
    family = parse(text)["leireye_bpf_info"]
    assert family["help"] == "BPF filter \\ with\nnewline"
    assert family["samples"] == [({"bpf": HOSTILE}, 1.0)]


def test_values() -> None:
    assert format_value(0) == "0"
    assert format_value(2**64 - 1) == "18446744073709551615"
    assert format_value(1.5) == "1.5"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    assert format_value(False) == "0"


@pytest.mark.parametrize(
    ("name", "kind", "labels", "message"),
    [
        ("leireye_packets", "counter", {}, "must end in _total"),
        ("2bad", "gauge", {}, "invalid metric name"),
        ("bad-name", "gauge", {}, "invalid metric name"),
        ("ok", "histogram", {}, "counter or gauge"),
        ("ok", "gauge", {"bad-label": "x"}, "invalid label name"),
        ("ok", "gauge", {"__reserved": "x"}, "invalid label name"),
    ],
)
def test_misuse_raises(name: str, kind: str, labels: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Metric(name, kind, "help", [(labels, 1)])  # type: ignore[arg-type]


def test_a_name_given_twice_raises() -> None:
    metric = Metric("leireye_up", "gauge", "up", [({}, 1)])
    with pytest.raises(ValueError, match="given twice"):
        render_metrics([metric, metric])
