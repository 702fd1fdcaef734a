"""The packet detail view: every recorded capture decodes layer by layer, cuts and hostile frames
end the list with Truncated or Malformed instead of raising, and random bytes never raise."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import dpkt
import dpkt.icmp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.decode.checksum import ones_sum, pseudo_header
from leireye.decode.detail import describe_frame, hex_dump
from leireye.record import LinkType
from tests.traffic import frames as fb
from tests.traffic.mix import MixBuilder

DATA = Path(__file__).resolve().parent.parent / "data"
CAPTURES = sorted(DATA.glob("*.pcap"))
RAW_BYTES = 256
HOSTILE_MPLS = base64.b64decode("AIgAAAAAAQAAAAAAiEcAAP///43/JA==")
FIRST_LAYER = {
    LinkType.EN10MB: "Ethernet",
    LinkType.LINUX_SLL: "SLL",
    LinkType.LINUX_SLL2: "SLL2",
    LinkType.RAW: None,  # raw IP: the first layer is IPv4 or IPv6
}


def _read(name: str) -> tuple[int, list[bytes]]:
    with (DATA / name).open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        return reader.datalink(), [bytes(buf) for _, buf in reader]


def _json_safe(value: object) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            _json_safe(item)
    elif isinstance(value, list):
        for item in value:
            _json_safe(item)
    else:
        assert isinstance(value, str | int | bool), repr(value)


def _check_shape(layers: list[dict[str, object]], frame: bytes) -> None:
    _json_safe(layers)
    json.dumps(layers)
    for layer in layers:
        assert set(layer) <= {"layer", "offset", "length", "fields", "truncated"}
        assert isinstance(layer["offset"], int) and 0 <= layer["offset"] <= len(frame)
        assert isinstance(layer["length"], int) and layer["length"] >= 0
        assert isinstance(layer["fields"], dict)
    for layer in layers[:-1]:
        assert layer["layer"] not in ("Truncated", "Malformed"), layers


def _layers(name: str, stored: int = RAW_BYTES) -> list[list[dict[str, Any]]]:
    linktype, frames = _read(name)
    return [describe_frame(frame[:stored], linktype, len(frame)) for frame in frames]


def _find(name: str, layer: str, stored: int = RAW_BYTES) -> list[dict[str, Any]]:
    """The fields of every `layer` found in the capture's frames."""
    found = _layers(name, stored)
    return [lay["fields"] for layers in found for lay in layers if lay["layer"] == layer]


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
@pytest.mark.parametrize("stored", [RAW_BYTES, 1 << 20])
def test_every_recorded_frame_decodes_cleanly(path: Path, stored: int) -> None:
    linktype, frames = _read(path.name)
    for frame in frames:
        layers = describe_frame(frame[:stored], linktype, len(frame))
        _check_shape(layers, frame)
        assert layers, frame.hex()
        assert all(lay["layer"] != "Malformed" for lay in layers), layers
        first = FIRST_LAYER.get(LinkType(linktype))
        assert layers[0]["layer"] in ((first,) if first else ("IPv4", "IPv6"))
        if stored > len(frame):
            assert all(lay["layer"] != "Truncated" and "truncated" not in lay for lay in layers)


def test_dns_queries_and_answers() -> None:
    dns = _find("dns.pcap", "DNS")
    assert {"name": "example.org", "type": "A"} in dns[0]["questions"]
    assert dns[0]["qr"] is False
    answers = [a for d in dns for a in d["answers"]]
    assert {"name": "example.org", "type": "A", "ttl": 300, "data": "192.0.2.10"} in answers
    assert {"name": "example.org", "type": "AAAA", "ttl": 300, "data": "2001:db8::10"} in answers
    # dpkt refuses messages with an HTTPS (type 65) record: read by hand instead
    assert any(a["type"] == "HTTPS" and a["name"] == "www.example.org" for a in answers)
    assert any(d["rcode_name"] == "NXDOMAIN" for d in dns)
    assert any(a["type"] == "TXT" and '"' in a["data"] for a in answers)


def test_tls_client_hello_sni_and_alpn_even_when_cut() -> None:
    for stored in (RAW_BYTES, 1 << 20):
        tls = _find("tls.pcap", "TLS", stored)
        hellos = [t for t in tls if t.get("handshake_name") == "ClientHello"]
        assert len(hellos) == 2
        assert all(h["sni"] == "example.org" and h["alpn"] == ["http/1.1"] for h in hellos)
        assert {"Handshake", "Application Data", "Alert"} <= {t["record_name"] for t in tls}


def test_http_request_and_response() -> None:
    http = _find("http.pcap", "HTTP")
    requests = [h for h in http if "method" in h]
    expected = {"method": "GET", "uri": "/index.html", "version": "HTTP/1.1"}
    assert expected.items() <= requests[0].items()
    assert requests[0]["user_agent"] == "curl/leireye-test"
    assert any(h.get("status") == "404" and h["reason"] == "File not found" for h in http)


def test_vlan_tags_and_qinq() -> None:
    tags = _find("vlan.pcap", "802.1Q")
    assert any(
        t["tpid"] == "0x8100 (802.1Q)" and t["id"] == 100 and t["priority"] == 5 for t in tags
    )
    assert any(t["tpid"] == "0x88a8 (802.1ad)" and t["id"] == 200 for t in tags)
    for layers in _layers("vlan.pcap"):
        assert layers[1]["layer"] == "802.1Q"


def test_ipv4_and_tcp_fields() -> None:
    layers = _layers("http.pcap")
    ip, tcp = next((ls[1]["fields"], ls[2]["fields"]) for ls in layers if ls[1]["layer"] == "IPv4")
    assert ip["src"] == "10.77.1.1" and ip["dst"] == "10.77.1.2"
    assert ip["protocol_name"] == "TCP" and ip["df"] is True and ip["flags"] == ["DF"]
    assert tcp["flags"] == ["SYN"] and tcp["dst_port"] == 80
    assert any(o.startswith("MSS=") for o in tcp["options"])


def test_fragments_are_not_decoded_past_ip() -> None:
    layers = _layers("icmp.pcap")
    frag = [ls for ls in layers if ls[-1]["layer"] == "Data" and ls[-1]["fields"].get("fragment")]
    assert len(frag) == 4


def _sample_frames() -> list[tuple[str, bytes, int]]:
    samples = []
    for name, index in (("dns.pcap", 11), ("tls.pcap", 5), ("http.pcap", 5), ("vlan.pcap", 9),
                        ("lo-any.pcap", 15), ("lo-any-sll.pcap", 26), ("raw.pcap", 92),
                        ("icmp.pcap", 26), ("ssh-like.pcap", 7)):  # fmt: skip
        linktype, frames = _read(name)
        samples.append((f"{name}#{index}", frames[index], linktype))
    return samples


SAMPLES = _sample_frames()


@pytest.mark.parametrize(("label", "frame", "linktype"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_every_cut_of_sample_frames(label: str, frame: bytes, linktype: int) -> None:
    complete = [lay["layer"] for lay in describe_frame(frame, linktype, len(frame))]
    for size in range(len(frame)):
        layers = describe_frame(frame[:size], linktype, len(frame))
        _check_shape(layers, frame[:size])
        names = [lay["layer"] for lay in layers]
        assert "Malformed" not in names, (label, size, layers)
        cut_somewhere = names[-1] == "Truncated" or any(lay.get("truncated") for lay in layers)
        assert cut_somewhere, (label, size, names)
        assert names[:-1] == complete[: len(names) - 1], (label, size, names)


def test_a_cut_inside_ethernet_is_one_truncated_layer() -> None:
    layers = describe_frame(b"\x02" * 9, LinkType.EN10MB, 60)
    assert layers == [
        {
            "layer": "Truncated",
            "offset": 0,
            "length": 9,
            "fields": {"layer": "Ethernet", "needed": 14, "available": 9, "wire_length": 60},
        }
    ]


def test_hostile_mpls_frame() -> None:
    layers = describe_frame(HOSTILE_MPLS, LinkType.EN10MB, len(HOSTILE_MPLS))
    _check_shape(layers, HOSTILE_MPLS)
    assert [lay["layer"] for lay in layers][:2] == ["Ethernet", "MPLS"]
    assert layers[-1]["layer"] in ("Truncated", "Malformed", "Data")


def test_ipv6_esp_frame() -> None:
    esp = fb.ether(fb.ipv6(b"\x00\x00\x10\x01\x00\x00\x00\x01" + b"\xaa" * 24, 50), 0x86DD)
    layers = describe_frame(esp, LinkType.EN10MB, len(esp))
    assert [lay["layer"] for lay in layers] == ["Ethernet", "IPv6", "Data"]
    assert layers[-1]["fields"] == {"protocol_name": "ESP", "bytes": 32}
    with_ext = fb.ether(fb.ipv6(b"\x00" * 16, 60, ext=bytes([50, 0]) + bytes(6)), 0x86DD)
    names = [lay["layer"] for lay in describe_frame(with_ext, LinkType.EN10MB, len(with_ext))]
    assert names == ["Ethernet", "IPv6", "IPv6 destination options", "Data"]


def test_malformed_header_is_named() -> None:
    bad_ihl = fb.ether(bytes([0x43]) + bytes(30), 0x0800)  # IHL 3 < 5
    layers = describe_frame(bad_ihl, LinkType.EN10MB, len(bad_ihl))
    assert layers[-1]["layer"] == "Malformed"
    fields: dict[str, Any] = layers[-1]["fields"]  # type: ignore[assignment]
    assert fields["layer"] == "IPv4"
    assert "UnpackError" in fields["error"]


def test_unsupported_link_type() -> None:
    assert describe_frame(b"abc", 147, 3)[0]["layer"] == "Unsupported"


LINKTYPES = [*LinkType, 147]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(LINKTYPES), st.binary(max_size=300), st.integers(0, 70000))
def test_random_bytes_never_raise(linktype: int, raw: bytes, wire_len: int) -> None:
    _check_shape(describe_frame(raw, linktype, wire_len), raw)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_real_frames_never_raise(
    sample: tuple[str, bytes, int], data: st.DataObject
) -> None:
    _, frame, linktype = sample
    position = data.draw(st.integers(0, len(frame) - 1))
    noise = data.draw(st.binary(min_size=1, max_size=8))
    mutated = frame[:position] + noise + frame[position + len(noise) :]
    _check_shape(describe_frame(mutated[:RAW_BYTES], linktype, len(mutated)), mutated[:RAW_BYTES])


def test_hex_dump() -> None:
    text = hex_dump(bytes(range(0x30, 0x30 + 20)))
    assert text.splitlines() == [
        "00000000  30 31 32 33 34 35 36 37  38 39 3a 3b 3c 3d 3e 3f  |0123456789:;<=>?|",
        "00000010  40 41 42 43                                       |@ABC|",
    ]
    assert hex_dump(b"") == ""
    assert hex_dump(b"\x00\x7f\xff")[-5:] == "|...|"


def _fields(frame: bytes, name: str, stored: int | None = None) -> dict[str, Any]:
    layers = describe_frame(frame[:stored], LinkType.EN10MB, len(frame))
    found: dict[str, Any] = next(layer["fields"] for layer in layers if layer["layer"] == name)
    return found


def test_ethertypes_read_in_hex_with_their_name() -> None:
    assert _fields(fb.tcp4(50000, 80), "Ethernet")["ethertype"] == "0x0800 (IPv4)"
    assert _fields(fb.ether(bytes(20), 0x88B5), "Ethernet")["ethertype"] == "0x88b5"


def test_checksums_in_hex_and_verified() -> None:
    ip, tcp = _fields(fb.tcp4(50000, 80), "IPv4"), _fields(fb.tcp4(50000, 80), "TCP")
    assert ip["checksum"].startswith("0x") and ip["checksum_status"] == "correct"
    assert tcp["checksum"].startswith("0x") and tcp["checksum_status"] == "correct"
    udp = _fields(fb.udp4(50000, 9999, b"hello"), "UDP")
    assert udp["checksum_status"] == "correct"
    echo = fb.ether(fb.ipv4(dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=1)), 1), 0x0800)
    assert _fields(echo, "ICMP")["checksum_status"] == "correct"


def test_a_bad_checksum_is_incorrect_and_says_what_it_should_be() -> None:
    good = _fields(fb.tcp4(50000, 80, payload=b"data"), "TCP")["checksum"]
    segment = fb.tcp(50000, 80, payload=b"data")
    segment.sum = 0x1234
    tcp = _fields(fb.ether(fb.ipv4(segment, 6), 0x0800), "TCP")
    assert (tcp["checksum"], tcp["checksum_status"]) == ("0x1234", "incorrect")
    assert tcp["checksum_note"] == f"should be {good}"
    ip = _fields(fb.ether(fb.ipv4(fb.tcp(50000, 80), 6, sum=0xBEEF), 0x0800), "IPv4")
    assert (ip["checksum"], ip["checksum_status"]) == ("0xbeef", "incorrect")


def test_partial_and_cut_checksums_are_not_checked() -> None:
    src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    segment = fb.tcp(50000, 80, payload=b"data")
    segment.sum = ones_sum(pseudo_header(src, dst, 6, 20 + 4))  # what offload leaves behind
    tcp = _fields(fb.ether(fb.ipv4(segment, 6), 0x0800), "TCP")
    assert tcp["checksum_status"] == "not checked" and "offload" in tcp["checksum_note"]
    big = fb.tcp4(50000, 80, payload=bytes(1000))
    cut = _fields(big, "TCP", stored=RAW_BYTES)
    assert cut["checksum_status"] == "not checked" and "stored" in cut["checksum_note"]
    unchecked = fb.udp(50000, 9999, b"x")
    unchecked.sum = 0
    raw = bytearray(fb.ether(fb.ipv4(unchecked, 17), 0x0800))
    raw[14 + 20 + 6 : 14 + 20 + 8] = b"\0\0"  # dpkt fills a zero sum in: take it out again
    assert _fields(bytes(raw), "UDP")["checksum_status"] == "not checked"


def test_the_window_is_raw_and_the_scale_shown_where_the_segment_announces_it() -> None:
    ws = b"\x01\x03\x03\x07"  # NOP, window scale 7
    syn = fb.ether(fb.ipv4(fb.tcp(50000, 443, dpkt.tcp.TH_SYN, opts=ws), 6), 0x0800)
    tcp = _fields(syn, "TCP")
    assert tcp["window"] == 512 and tcp["window_scale"].startswith("shift 7 (×128)")
    assert "window_scale" not in _fields(fb.tcp4(50000, 443), "TCP")


def test_flags_in_the_one_form() -> None:
    assert _fields(fb.tcp4(50000, 443, 0x18, b"x"), "TCP")["flags"] == ["PSH", "ACK"]


def test_a_bare_syn_to_443_has_only_a_suggested_application() -> None:
    syn = _fields(fb.tcp4(54321, 443, dpkt.tcp.TH_SYN), "TCP")
    assert syn["suggested_application"].startswith("HTTPS (port 443)")
    assert "application_by" not in syn
    hello = MixBuilder(1).client_hello("example.org")
    confirmed = _fields(fb.tcp4(54321, 443, 0x18, hello), "TCP")
    assert confirmed["application_by"] == "content" and "suggested_application" not in confirmed
    data = _fields(fb.tcp4(443, 54321, 0x18, b"\x17" * 40), "TCP")
    assert data["application_by"].startswith("port 443 (HTTPS)")


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_recorded_checksums_are_correct_or_say_why_not(path: Path) -> None:
    """The captures were recorded with real checksums; on `lo` TCP and UDP carry partial ones
    (offload), and a first fragment's sum covers later fragments too: none is incorrect."""
    statuses = {
        (layer["layer"], layer["fields"]["checksum_status"], layer["fields"].get("checksum_note"))
        for layers in _layers(path.name, 1 << 20)
        for layer in layers
        if "checksum_status" in layer["fields"]
    }
    assert statuses and all(status != "incorrect" for _, status, _ in statuses), statuses
    if path.name.startswith("lo-any"):
        assert all(note and "offload" in note for name, _, note in statuses if name == "TCP")
    if path.name == "icmp.pcap":
        assert any(note and "fragment" in note for _, _, note in statuses)
