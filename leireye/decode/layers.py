"""The fast path's link and network stages: Ethernet-like headers and VLAN tags, loopback and raw
links, MPLS, ARP, IPv4 and the IPv6 extension-header walk (see `decode` for the shape of a stage).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from leireye.record import F_HAS_ADDR, IPV4_MAPPED_LO, DecodeError, Proto

from . import rules
from .chunk import Chunk, Index, Ints, select
from .fastapp import arp_text
from .transport import transport

_MAPPED: Final = np.uint64(IPV4_MAPPED_LO)
_IPV6_FAMILIES: Final = np.array(sorted(rules.IPV6_FAMILIES), dtype=np.int64)


def _member_table(size: int, members: frozenset[int]) -> npt.NDArray[np.bool_]:
    table = np.zeros(size, dtype=bool)
    table[sorted(members)] = True
    return table


_IS_VLAN: Final = _member_table(65536, rules.VLAN_TYPES)
_IS_IPV6_EXT: Final = _member_table(256, rules.IPV6_EXT)


def unsupported(c: Chunk, linktype: int) -> None:
    c.error[:] = DecodeError.UNSUPPORTED_LINKTYPE
    c.set_text(np.arange(c.n, dtype=np.int64), rules.linktype_text(linktype))


def ethernet_like(c: Chunk, ix: Index, size: int, type_at: int, layer: str) -> None:
    ix = ix[c.need(ix, np.zeros_like(ix), size, c.cap[ix], layer)]
    ethertype = c.at(c.u16, ix, type_at)
    off = np.full(ix.size, size, dtype=np.int64)
    alive = np.ones(ix.size, dtype=bool)
    for depth in range(rules.MAX_VLAN_TAGS):
        tagged = np.flatnonzero(alive & _IS_VLAN[ethertype])
        if not tagged.size:
            break
        ok = c.need(ix[tagged], off[tagged], 4, c.cap[ix[tagged]], "802.1Q")
        bad, good = tagged[~ok], tagged[ok]
        c.ethertype[ix[bad]] = ethertype[bad]
        alive[bad] = False
        if depth == 0:
            c.vlan[ix[good]] = c.at(c.u16, ix[good], off[good]) & 0x0FFF
        ethertype[good] = c.at(c.u16, ix[good], off[good] + 2)
        off[good] += 4
    ix, off, ethertype = ix[alive], off[alive], ethertype[alive]
    llc = ethertype <= rules.LLC_MAX
    if llc.any():
        lix, loff = ix[llc], off[llc]
        stp = (loff + 2 <= c.cap[lix]) & (c.at(c.u16, lix, loff) == 0x4242)
        c.by_key(lix, stp.astype(np.int64), lambda key: rules.llc_text(bool(key)))
    dispatch(c, ix[~llc], off[~llc], ethertype[~llc])


def loopback(c: Chunk, ix: Index, little_endian: bool) -> None:
    ix = ix[c.need(ix, np.zeros_like(ix), 4, c.cap[ix], "Loopback")]
    word = c.u32[c.start[ix]]
    family = word.astype(np.int64)
    if little_endian:
        swapped = word.view("<u4").astype(np.int64)
        family = np.where(swapped > 0xFFFF, family, swapped)
    off = np.full(ix.size, 4, dtype=np.int64)
    v4, v6 = family == 2, (family[:, None] == _IPV6_FAMILIES).any(axis=1)
    c.ethertype[ix[v4]] = rules.ETH_P_IP
    c.ethertype[ix[v6]] = rules.ETH_P_IPV6
    c.v4.append((ix[v4], off[v4]))
    c.v6.append((ix[v6], off[v6]))
    other = ~(v4 | v6)
    c.by_key(ix[other], family[other], rules.family_text)


def raw(c: Chunk, ix: Index) -> None:
    ix = ix[c.need(ix, np.zeros_like(ix), 1, c.cap[ix], "IP")]
    version = c.at(c.u8, ix, 0) >> 4
    v4, v6 = version == 4, version == 6
    c.ethertype[ix[v4]] = rules.ETH_P_IP
    c.ethertype[ix[v6]] = rules.ETH_P_IPV6
    c.v4.append((ix[v4], np.zeros(int(v4.sum()), dtype=np.int64)))
    c.v6.append((ix[v6], np.zeros(int(v6.sum()), dtype=np.int64)))
    c.mark(ix[~(v4 | v6)], DecodeError.MALFORMED, "IP")


def dispatch(c: Chunk, ix: Index, off: Ints, ethertype: Ints) -> None:
    c.ethertype[ix] = ethertype
    v4, v6 = ethertype == rules.ETH_P_IP, ethertype == rules.ETH_P_IPV6
    is_arp = ethertype == rules.ETH_P_ARP
    is_mpls = (ethertype == 0x8847) | (ethertype == 0x8848)
    c.v4.append((ix[v4], off[v4]))
    c.v6.append((ix[v6], off[v6]))
    if is_arp.any():
        arp(c, ix[is_arp], off[is_arp])
    if is_mpls.any():
        mpls(c, ix[is_mpls], off[is_mpls])
    other = ~(v4 | v6 | is_arp | is_mpls)
    c.by_key(ix[other], ethertype[other], rules.ethertype_text)


def mpls(c: Chunk, ix: Index, off: Ints) -> None:
    off = off.copy()
    active = np.ones(ix.size, dtype=bool)
    bottom = np.zeros(ix.size, dtype=bool)
    for _ in range(rules.MAX_MPLS_LABELS):
        sub = np.flatnonzero(active)
        if not sub.size:
            break
        ok = c.need(ix[sub], off[sub], 4, c.cap[ix[sub]], "MPLS")
        active[sub[~ok]] = False
        good = sub[ok]
        last = good[(c.at(c.u8, ix[good], off[good] + 2) & 1) == 1]
        off[good] += 4
        bottom[last], active[last] = True, False
    has_payload = bottom & (off < c.cap[ix])
    c.mark(ix[bottom & ~has_payload], DecodeError.TRUNCATED, "MPLS")
    version = np.where(has_payload, c.at(c.u8, ix, off) >> 4, 0)
    v4, v6 = has_payload & (version == 4), has_payload & (version == 6)
    c.v4.append((ix[v4], off[v4]))
    c.v6.append((ix[v6], off[v6]))
    c.set_text(ix[active | (has_payload & ~(v4 | v6))], "MPLS")


def arp(c: Chunk, ix: Index, off: Ints) -> None:
    c.proto[ix] = Proto.ARP
    ok = c.need(ix, off, rules.ARP_LEN, c.cap[ix], "ARP")
    ix, off = ix[ok], off[ok]
    base = c.start[ix] + off
    eth_ipv4 = (c.u16[base + 2] == rules.ETH_P_IP) & (c.u8[base + 4] == 6) & (c.u8[base + 5] == 4)
    op = c.u16[base + 6].tolist()
    sha = (c.u64[base + 8] >> np.uint64(16)).tolist()
    spa, tpa = c.u32[base + 14].astype(np.uint64), c.u32[base + 24].astype(np.uint64)
    addr = ix[eth_ipv4]
    c.flags[addr] |= F_HAS_ADDR
    c.src_lo[addr] = _MAPPED | spa[eth_ipv4]
    c.dst_lo[addr] = _MAPPED | tpa[eth_ipv4]
    senders = [s if e else None for s, e in zip(spa.tolist(), eth_ipv4.tolist(), strict=True)]
    c.set_info(
        ix,
        [arp_text(o, s, t, h) for o, s, t, h in zip(op, senders, tpa.tolist(), sha, strict=True)],
    )


def ipv4(c: Chunk, ix: Index, off: Ints) -> None:
    ix, off = select(c.need(ix, off, 20, c.cap[ix], "IPv4"), ix, off)
    first = c.at(c.u8, ix, off)
    header_len = (first & 15) * 4
    bad = ((first >> 4) != 4) | (header_len < 20)
    c.mark_where(ix, bad, DecodeError.MALFORMED, "IPv4")
    ix, off, header_len = select(~bad, ix, off, header_len)
    base = c.start[ix] + off
    proto = c.u8[base + 9]
    c.ip_version[ix] = 4
    c.ip_proto[ix] = proto
    c.flags[ix] |= F_HAS_ADDR
    c.src_lo[ix] = _MAPPED | c.u32[base + 12].astype(np.uint64)
    c.dst_lo[ix] = _MAPPED | c.u32[base + 16].astype(np.uint64)
    cap = c.cap[ix]
    ok = c.need(ix, off, header_len, cap, "IPv4")
    total = c.u16[base + 2].astype(np.int64)
    bad = ok & (total != 0) & (total < header_len)
    c.mark_where(ix, bad, DecodeError.MALFORMED, "IPv4")
    declared_end = np.where(total == 0, cap, off + total)
    fragment = (c.u16[base + 6] & 0x1FFF).astype(np.int64) * 8
    frag = ok & ~bad & (fragment != 0)
    if frag.any():
        c.by_key(
            ix[frag],
            (proto[frag].astype(np.int64) << 16) | fragment[frag],
            lambda key: rules.fragment_text(4, key >> 16, key & 0xFFFF),
        )
    end = np.minimum(declared_end, cap)
    c.l4.append(select(ok & ~bad & ~frag, ix, off + header_len, end, declared_end))


def ipv6(c: Chunk, ix: Index, off: Ints) -> None:
    ix, off = select(c.need(ix, off, 40, c.cap[ix], "IPv6"), ix, off)
    bad = (c.at(c.u8, ix, off) >> 4) != 6
    c.mark_where(ix, bad, DecodeError.MALFORMED, "IPv6")
    ix, off = select(~bad, ix, off)
    base = c.start[ix] + off
    c.ip_version[ix] = 6
    c.flags[ix] |= F_HAS_ADDR
    c.src_hi[ix], c.src_lo[ix] = c.u64[base + 8], c.u64[base + 16]
    c.dst_hi[ix], c.dst_lo[ix] = c.u64[base + 24], c.u64[base + 32]
    cap = c.cap[ix]
    payload_len = c.u16[base + 4].astype(np.int64)
    declared_end = np.where(payload_len == 0, cap, off + 40 + payload_len)
    end = np.minimum(declared_end, cap)
    next_header = c.u8[base + 6].astype(np.int64)
    c.ip_proto[ix] = next_header
    at = off + 40
    alive = extension_headers(c, ix, at, end, next_header)
    c.l4.append(select(alive, ix, at, end, declared_end))


def extension_headers(c: Chunk, ix: Index, at: Ints, end: Ints, nh: Ints) -> npt.NDArray[np.bool_]:
    """Walk the IPv6 extension headers in place (`at`, `nh`); which packets reach a payload."""
    alive = np.ones(ix.size, dtype=bool)
    for count in range(rules.MAX_IPV6_EXT + 1):
        sub = np.flatnonzero(alive & _IS_IPV6_EXT[nh])
        if not sub.size:
            break
        if count == rules.MAX_IPV6_EXT:
            c.mark(ix[sub], DecodeError.MALFORMED, "IPv6")
            alive[sub] = False
            break
        is_frag = nh[sub] == rules.IPV6_EXT_FRAG
        frag, opts = sub[is_frag], sub[~is_frag]
        ok = c.need(ix[frag], at[frag], 8, end[frag], "IPv6")
        alive[frag[~ok]] = False
        frag = frag[ok]
        offset = c.at(c.u16, ix[frag], at[frag] + 2) & 0xFFF8
        nh[frag] = c.at(c.u8, ix[frag], at[frag])
        at[frag] += 8
        later = offset != 0
        c.by_key(
            ix[frag[later]],
            (nh[frag[later]] << 16) | offset[later],
            lambda key: rules.fragment_text(6, key >> 16, key & 0xFFFF),
        )
        alive[frag[later]] = False
        ok = c.need(ix[opts], at[opts], 2, end[opts], "IPv6")
        alive[opts[~ok]] = False
        opts = opts[ok]
        units = c.at(c.u8, ix[opts], at[opts] + 1)
        size = np.where(nh[opts] == rules.IPV6_EXT_AH, (units + 2) * 4, (units + 1) * 8)
        ok = c.need(ix[opts], at[opts], size, end[opts], "IPv6")
        alive[opts[~ok]] = False
        opts, size = opts[ok], size[ok]
        nh[opts] = c.at(c.u8, ix[opts], at[opts])
        at[opts] += size
        moved = np.concatenate((frag, opts))
        c.ip_proto[ix[moved]] = nh[moved]
    return alive


def network_layers(c: Chunk) -> None:
    """IPv4 and IPv6 for every packet that reached them (from any link), then the transports."""
    for parts, stage in ((c.v4, ipv4), (c.v6, ipv6)):
        if parts:
            stage(c, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    transport(c)
