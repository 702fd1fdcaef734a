#!/usr/bin/env bash
# Regenerate the sample captures in tests/data/ from real tools talking between two throw-away
# network namespaces joined by a veth pair. Run as root:   sudo tests/data/regenerate.sh
#
# Nothing leaves the machine: every packet goes between the namespaces created here
# (10.77.1.0/30, fd77:1::/64, fe80::1/fe80::2) or over a namespace's own loopback. The namespaces,
# the servers and the temporary files are removed on exit, also when a step fails.
#
# Needs: iproute2, tcpdump, tshark + editcap + mergecap (wireshark-common), curl, dig (dnsutils),
# openssl, ping (iputils-ping), ssh (openssh-client), ethtool, python3 with dpkt (the repo's .venv).
# Environment: OUT=dir (default: this directory), PYTHON=interpreter with dpkt,
# KEEP_WORK=1 keeps the work directory with the tool logs.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${OUT:-$HERE}
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

NS_A=le-rg-a          # client side; captures are taken on its veth end unless said otherwise
NS_B=le-rg-b          # server side
IF_A=va
IF_B=vb
MAC_A=02:00:0a:4d:01:01
MAC_B=02:00:0a:4d:01:02
IP_A=10.77.1.1
IP_B=10.77.1.2
IP6_A=fd77:1::1
IP6_B=fd77:1::2
LL_A=fe80::1
LL_B=fe80::2

WORK=
PIDS=()
CAP_PID=
CAP_NAME=
CAP_DEV=

log() { printf '[regenerate] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# clean-up (also runs on failure and on Ctrl-C)
kill_ns_procs() {   # processes still alive inside one of *our* namespaces, by pid
    local ns=$1 pid
    ip netns list 2>/dev/null | grep -qw "^$ns" || return 0
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
}

teardown() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    kill_ns_procs "$NS_A"
    kill_ns_procs "$NS_B"
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    teardown
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ -n ${KEEP_WORK:-} || $rc -ne 0 ]]; then
            log "work directory kept: $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    ((rc == 0)) || log "FAILED (exit $rc); namespaces removed, $OUT left unchanged"
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'log "command failed at line $LINENO: $BASH_COMMAND"' ERR

# ---------------------------------------------------------------------------------------------
# helpers
# run a client inside a namespace; every client gets a time limit (TMO seconds, default 20)
in_a() { timeout --kill-after=3 "${TMO:-20}" ip netns exec "$NS_A" "$@"; }
in_b() { timeout --kill-after=3 "${TMO:-20}" ip netns exec "$NS_B" "$@"; }

bg_in() {   # bg_in NS LOGNAME cmd... : start a server in a namespace, remember its pid
    local ns=$1 name=$2
    shift 2
    ip netns exec "$ns" "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
}

wait_for() {   # wait_for SECONDS description cmd... : poll until cmd succeeds
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    die "timed out after ${secs}s waiting for $what"
}

listening() {   # listening NS tcp|udp PORT
    [[ -n $(ip netns exec "$1" ss -Hln --"$2" "sport = :$3" 2>/dev/null) ]]
}

flush_neigh() {   # every capture starts with an empty ARP / neighbour cache: ARP and ND included
    ip -n "$NS_A" neigh flush dev "$IF_A" 2>/dev/null || true
    ip -n "$NS_B" neigh flush dev "$IF_B" 2>/dev/null || true
}

cap_start() {   # cap_start NAME NS DEV [tcpdump options...]
    CAP_NAME=$1
    CAP_DEV=$3
    local ns=$2 dev=$3
    shift 3
    rm -f "$WORK/$CAP_NAME.pcap"
    ip netns exec "$ns" tcpdump -Z root -U --immediate-mode -B 65536 -n -i "$dev" "$@" -w "$WORK/$CAP_NAME.pcap" \
        >"$WORK/$CAP_NAME.tcpdump.log" 2>&1 &
    CAP_PID=$!
    PIDS+=("$CAP_PID")
    wait_for 10 "tcpdump on $ns/$dev" grep -q "listening on" "$WORK/$CAP_NAME.tcpdump.log"
    sleep 0.3
}

cap_stop() {
    sleep 0.7   # let the last packets (FIN/ACK, late replies) arrive
    kill -INT "$CAP_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do kill -0 "$CAP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$CAP_PID" 2>/dev/null && die "tcpdump for $CAP_NAME did not stop"
    wait "$CAP_PID" 2>/dev/null || true
    # Without --immediate-mode tcpdump loses, on SIGINT, the packets of a ring block not yet
    # retired. Immediate mode gives every packet a ring slot sized by the snaplen (256 KiB): with
    # the default 2 MiB buffer that is ~8 slots and a loopback burst overflowed it, hence -B 64 MiB.
    local captured received dropped
    captured=$(sed -n 's/^\([0-9]*\) packets\? captured.*/\1/p' "$WORK/$CAP_NAME.tcpdump.log")
    received=$(sed -n 's/^\([0-9]*\) packets\? received by filter.*/\1/p' "$WORK/$CAP_NAME.tcpdump.log")
    dropped=$(sed -n 's/^\([0-9]*\) packets\? dropped by kernel.*/\1/p' "$WORK/$CAP_NAME.tcpdump.log")
    log "$CAP_NAME: captured ${captured:-?}, received by filter ${received:-?}, dropped ${dropped:-?}"
    # on 'any', lo packets are counted twice in "received" (libpcap discards the outgoing copy)
    [[ -n $captured && $dropped == 0 && ($captured == "$received" || $CAP_DEV == any) ]] \
        || die "$CAP_NAME: capture incomplete (see $WORK/$CAP_NAME.tcpdump.log)"
    [[ -s $WORK/$CAP_NAME.pcap ]] || die "$CAP_NAME.pcap is empty"
}

# ---------------------------------------------------------------------------------------------
# checks
[[ $(id -u) -eq 0 ]] || die "run as root (network namespaces, raw capture)"
missing=()
for tool in ip ss tcpdump tshark editcap mergecap capinfos curl dig openssl ping ssh ethtool \
    timeout python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (apt-get install iproute2 tcpdump \
tshark wireshark-common curl dnsutils openssl iputils-ping openssh-client ethtool)"
"$PYTHON" -c 'import dpkt' 2>/dev/null || die "$PYTHON cannot import dpkt (set PYTHON=...)"

WORK=$(mktemp -d /tmp/leireye-regen.XXXXXX)
chmod 755 "$WORK"

# ---------------------------------------------------------------------------------------------
# helper programs
cat >"$WORK/dns_server.py" <<'EOF'
"""Tiny authoritative DNS server for example.org (UDP and TCP), answers built with dpkt.

The HTTPS (type 65) answer has hand-built RDATA: dpkt 1.9.8 cannot pack or parse type 65.
"""
import socket
import socketserver
import struct
import sys
import threading

import dpkt

DNS = dpkt.dns
ZONE = "example.org"
HOSTS = {"example.org", "www.example.org", "mail.example.org"}
V4 = socket.inet_aton("192.0.2.10")          # documentation addresses: answers only, never used
V6 = socket.inet_pton(socket.AF_INET6, "2001:db8::10")
TYPE_HTTPS = 65


def svc_param(key, value):
    return struct.pack(">HH", key, len(value)) + value


HTTPS_RDATA = (
    struct.pack(">H", 1)                                  # SvcPriority 1 (service mode)
    + b"\x00"                                             # TargetName "." (the owner name)
    + svc_param(1, b"\x02h2\x02h3")                       # alpn="h2,h3"
    + svc_param(3, struct.pack(">H", 443))                # port=443
    + svc_param(4, V4)                                    # ipv4hint=192.0.2.10
    + svc_param(6, V6)                                    # ipv6hint=2001:db8::10
)


def rr(name, rtype, **kw):
    return DNS.DNS.RR(name=name, type=rtype, cls=DNS.DNS_IN, ttl=300, **kw)


def records(name, qtype):
    if qtype == DNS.DNS_A:
        return [rr(name, DNS.DNS_A, ip=V4)]
    if qtype == DNS.DNS_AAAA:
        return [rr(name, DNS.DNS_AAAA, ip6=V6)]
    if qtype == DNS.DNS_MX and name == ZONE:
        return [rr(name, DNS.DNS_MX, preference=10, mxname="mail." + ZONE)]
    if qtype == DNS.DNS_TXT and name == ZONE:
        return [rr(name, DNS.DNS_TXT, text=[b"v=spf1 -all"]),
                rr(name, DNS.DNS_TXT, text=[b"leireye test record", b"second string"])]
    if qtype == TYPE_HTTPS and name in (ZONE, "www." + ZONE):
        return [rr(name, TYPE_HTTPS, rdata=HTTPS_RDATA)]
    return []


def soa():
    return rr(ZONE, DNS.DNS_SOA, mname="ns." + ZONE, rname="hostmaster." + ZONE,
              serial=2024010101, refresh=3600, retry=600, expire=86400, minimum=60)


def answer(data):
    try:
        q = DNS.DNS(data)
    except Exception:
        return None
    if q.qr or not q.qd:
        return None
    r = DNS.DNS(id=q.id, qd=q.qd, an=[], ns=[], ar=[])
    r.qr = DNS.DNS_R
    r.opcode = q.opcode
    r.aa = 1
    r.rd = q.rd
    question = q.qd[0]
    name = question.name.lower().rstrip(".")
    if name in HOSTS:
        r.an = records(name, question.type)
        if not r.an:
            r.ns = [soa()]                                 # NODATA
        r.rcode = DNS.DNS_RCODE_NOERR
    else:
        r.ns = [soa()]
        r.rcode = DNS.DNS_RCODE_NXDOMAIN
    if any(a.type == DNS.DNS_OPT for a in q.ar):          # EDNS in, EDNS out
        r.ar = [DNS.DNS.RR(name="", type=DNS.DNS_OPT, cls=1232, ttl=0)]
    return bytes(r)


class UDP(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        out = answer(data)
        if out:
            sock.sendto(out, self.client_address)


class TCP(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            hdr = self.rfile.read(2)
            if len(hdr) < 2:
                return
            data = self.rfile.read(struct.unpack(">H", hdr)[0])
            out = answer(data)
            if out is None:
                return
            self.wfile.write(struct.pack(">H", len(out)) + out)


def server(cls, base, addr):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    srv_cls = type("S", (socketserver.ThreadingMixIn, base),
                   {"address_family": fam, "allow_reuse_address": True, "daemon_threads": True})
    return srv_cls((addr, 53), cls)


servers = []
for addr in sys.argv[1:]:
    servers.append(server(UDP, socketserver.UDPServer, addr))
    servers.append(server(TCP, socketserver.TCPServer, addr))
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("dns server ready", flush=True)
servers[0].serve_forever()
EOF

cat >"$WORK/ssh_server.py" <<'EOF'
"""SSH-like server: exchanges version banners and KEXINIT with a real ssh client, then closes."""
import os
import socket
import struct
import sys


def namelist(s):
    return struct.pack(">I", len(s)) + s.encode()


def binary_packet(payload):
    pad = 8 - (5 + len(payload)) % 8
    pad += 8 if pad < 4 else 0
    return struct.pack(">IB", 1 + len(payload) + pad, pad) + payload + os.urandom(pad)


KEXINIT = bytes([20]) + os.urandom(16) + b"".join(namelist(n) for n in (
    "curve25519-sha256,ecdh-sha2-nistp256", "ssh-ed25519", "aes128-ctr,aes256-gcm@openssh.com",
    "aes128-ctr,aes256-gcm@openssh.com", "hmac-sha2-256", "hmac-sha2-256", "none", "none",
    "", "")) + b"\x00" + b"\x00\x00\x00\x00"

srv = socket.create_server((sys.argv[1], 22))
print("ssh server ready", flush=True)
while True:
    conn, _ = srv.accept()
    with conn:
        conn.settimeout(3)
        try:
            conn.sendall(b"SSH-2.0-LeirEyeTest_0.1\r\n")
            buf = b""
            while b"\r\n" not in buf:                   # client version banner
                chunk = conn.recv(4096)
                if not chunk:
                    raise OSError("closed")
                buf += chunk
            buf = buf.split(b"\r\n", 1)[1]
            conn.sendall(binary_packet(KEXINIT))
            done = False
            while not done:                              # client KEXINIT (20), KEX_ECDH_INIT (30)
                while len(buf) >= 6 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
                    n = struct.unpack(">I", buf[:4])[0]
                    done = done or buf[5] == 30
                    buf = buf[4 + n:]
                if done:
                    break
                chunk = conn.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
EOF

cat >"$WORK/vlan_inject.py" <<'EOF'
"""Replay Ethernet frames from pcaps with 802.1Q (and 802.1ad QinQ) tags added, over AF_PACKET."""
import socket
import struct
import sys
import time

import dpkt

ifname, *files = sys.argv[1:]
frames = []
for path in files:
    with open(path, "rb") as f:
        frames += [bytes(buf) for _, buf in dpkt.pcap.Reader(f)]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((ifname, 0))
sent = 0
for i, frame in enumerate(frames):
    macs, rest = frame[:12], frame[12:]
    if i % 10 == 9:        # every tenth frame double-tagged: S-tag 200 outside, C-tag 100 inside
        tagged = macs + struct.pack(">HHHH", 0x88A8, 200, 0x8100, (3 << 13) | 100) + rest
    else:                  # VLAN 100; DNS frames with priority (PCP) 5
        pcp = 5 if b"\x00\x35" in frame[34:38] else 0
        tagged = macs + struct.pack(">HH", 0x8100, (pcp << 13) | 100) + rest
    sent += sock.send(tagged) > 0
    time.sleep(0.002)
print(f"injected {sent} tagged frames", flush=True)
EOF

# ---------------------------------------------------------------------------------------------
# topology: NS_A [va 10.77.1.1 fd77:1::1] <--veth--> [vb 10.77.1.2 fd77:1::2] NS_B
teardown   # idempotent: remove leftovers of an earlier, interrupted run
log "creating namespaces $NS_A and $NS_B"
ip netns add "$NS_A"
ip netns add "$NS_B"
for ns in "$NS_A" "$NS_B"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
        net.ipv6.conf.all.router_solicitations=0 net.ipv6.conf.default.router_solicitations=0
    ip -n "$ns" link set lo up
done
ip link add "$IF_A" netns "$NS_A" address "$MAC_A" type veth peer name "$IF_B" netns "$NS_B" \
    address "$MAC_B"
setup_if() {   # setup_if NS IF IPv4 IPv6 LINKLOCAL
    local ns=$1 dev=$2
    ip -n "$ns" link set "$dev" addrgenmode none
    ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$dev.accept_dad=0" \
        "net.ipv6.conf.$dev.router_solicitations=0"
    # wire-like packets: no TSO/GSO super-packets, no GRO, real checksums instead of partial ones
    ip netns exec "$ns" ethtool -K "$dev" tx off rx off tso off gso off gro off >/dev/null 2>&1 \
        || log "ethtool -K $dev failed: captured checksums or segment sizes may look odd"
    ip -n "$ns" addr add "$3/30" dev "$dev"
    ip -n "$ns" addr add "$4/64" dev "$dev" nodad
    ip -n "$ns" addr add "$5/64" dev "$dev" nodad
    ip -n "$ns" link set "$dev" up
}
setup_if "$NS_A" "$IF_A" "$IP_A" "$IP6_A" "$LL_A"
setup_if "$NS_B" "$IF_B" "$IP_B" "$IP6_B" "$LL_B"
sleep 2.5   # let the link-up chatter (MLD reports) die down before the first capture

# servers in NS_B
mkdir -p "$WORK/www"
cat >"$WORK/www/index.html" <<'EOF'
<!doctype html>
<html><head><title>LeirEye test page</title></head>
<body><h1>LeirEye</h1><p>A small page served by python3 -m http.server for tests/data.</p></body>
</html>
EOF
bg_in "$NS_B" http python3 -m http.server 80 --bind :: --directory "$WORK/www"
bg_in "$NS_B" dns "$PYTHON" "$WORK/dns_server.py" "$IP_B" "$IP6_B" 127.0.0.1 ::1
bg_in "$NS_B" ssh "$PYTHON" "$WORK/ssh_server.py" "$IP_B"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=example.org" -addext "subjectAltName=DNS:example.org,DNS:www.example.org" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >/dev/null 2>&1
bg_in "$NS_B" tls openssl s_server -accept 443 -cert "$WORK/cert.pem" -key "$WORK/key.pem" \
    -www -alpn http/1.1
wait_for 10 "http server" listening "$NS_B" tcp 80
wait_for 10 "dns server (udp)" listening "$NS_B" udp 53
wait_for 10 "dns server (tcp)" listening "$NS_B" tcp 53
wait_for 10 "ssh-like server" listening "$NS_B" tcp 22
wait_for 10 "tls server" listening "$NS_B" tcp 443

# ---------------------------------------------------------------------------------------------
log "http.pcap"
flush_neigh
cap_start http "$NS_A" "$IF_A"
in_a curl -sS -o /dev/null -A "curl/leireye-test" "http://$IP_B/index.html"
in_a curl -sS -o /dev/null "http://$IP_B/no-such-page"     # 404
in_a curl -sS -o /dev/null -g "http://[$IP6_B]/"            # over IPv6, directory index
cap_stop

log "dns.pcap"
flush_neigh
cap_start dns "$NS_A" "$IF_A"
DIG=(dig "@$IP_B" +tries=1 +time=3)
{
    for qtype in A AAAA MX TXT HTTPS; do in_a "${DIG[@]}" example.org "$qtype"; done
    in_a "${DIG[@]}" www.example.org HTTPS
    in_a "${DIG[@]}" nosuch.example.org A                      # NXDOMAIN + SOA
    in_a "${DIG[@]}" +tcp example.org A                        # DNS over TCP
    in_a "${DIG[@]}" +noedns www.example.org A                 # no OPT record
    in_a dig "@$IP6_B" +tries=1 +time=3 example.org AAAA       # IPv6 transport
} >"$WORK/dig.out"
cap_stop
grep -q 'example.org.*IN[[:space:]]*HTTPS[[:space:]]*1 \. alpn="h2,h3"' "$WORK/dig.out" \
    || die "dig did not show the HTTPS answer (see $WORK/dig.out)"

log "icmp.pcap"
flush_neigh
cap_start icmp "$NS_A" "$IF_A"
in_a ping -n -c 3 -i 0.2 "$IP_B" >/dev/null                 # ARP + echo
in_a ping -n -c 1 -s 2000 "$IP_B" >/dev/null                # fragmented IPv4 echo
in_a ping -6 -n -c 3 -i 0.2 "$IP6_B" >/dev/null             # NS/NA + echo
in_a ping -6 -n -c 2 -i 0.2 "$LL_B%$IF_A" >/dev/null        # link-local
in_a ping -6 -n -c 1 -s 2000 "$IP6_B" >/dev/null            # IPv6 fragment header
in_a dig "@$IP_B" -p 5300 +tries=1 +time=1 example.org >/dev/null || true    # port unreachable
in_a dig "@$IP6_B" -p 5300 +tries=1 +time=1 example.org >/dev/null || true   # ICMPv6 unreach.
cap_stop

log "tls.pcap"
flush_neigh
cap_start tls "$NS_A" "$IF_A"
for ver in -tls1_3 -tls1_2; do
    printf 'GET / HTTP/1.0\r\n\r\n' | in_a openssl s_client -connect "$IP_B:443" \
        -servername example.org -alpn http/1.1 "$ver" -ign_eof >>"$WORK/s_client.out" 2>&1
done
cap_stop

log "ssh-like.pcap"
flush_neigh
cap_start ssh-like "$NS_A" "$IF_A"
in_a ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 -p 22 "probe@$IP_B" true \
    >"$WORK/ssh-client.log" 2>&1 || true     # the server hangs up after KEXINIT: expected
cap_stop

log "vlan.pcap (tagged replay of dns + icmp, captured on the receiving veth end)"
cap_start vlan "$NS_B" "$IF_B"
in_a "$PYTHON" "$WORK/vlan_inject.py" "$IF_A" "$WORK/dns.pcap" "$WORK/icmp.pcap" \
    >"$WORK/vlan_inject.log" 2>&1
cap_stop

log "lo-any.pcap (SLL2) and lo-any-sll.pcap (SLL v1): -i any inside $NS_B"
lo_any_traffic() {
    in_b curl -sS -o /dev/null http://127.0.0.1/index.html
    in_b curl -sS -o /dev/null -g "http://[::1]/"
    in_b dig @127.0.0.1 +tries=1 +time=3 example.org A >/dev/null
    in_b ping -n -c 2 -i 0.2 127.0.0.1 >/dev/null
    in_b ping -6 -n -c 2 -i 0.2 ::1 >/dev/null
    in_a ping -n -c 2 -i 0.2 "$IP_B" >/dev/null              # veth traffic seen by 'any' too
}
flush_neigh
cap_start lo-any "$NS_B" any
lo_any_traffic
cap_stop
flush_neigh
cap_start lo-any-sll "$NS_B" any -y LINUX_SLL
lo_any_traffic
cap_stop

# ---------------------------------------------------------------------------------------------
log "raw.pcap (IP packets of http + dns + icmp, Ethernet header removed, LINKTYPE_RAW)"
mergecap -a -F pcap -w "$WORK/eth-ip.tmp.pcap" "$WORK/http.pcap" "$WORK/dns.pcap" "$WORK/icmp.pcap"
tcpdump -r "$WORK/eth-ip.tmp.pcap" -w "$WORK/eth-ip-only.tmp.pcap" 'ip or ip6' 2>/dev/null
editcap -F pcap -C 14 -T rawip "$WORK/eth-ip-only.tmp.pcap" "$WORK/raw.pcap"

log "mixed.pcap (all Ethernet captures, concatenated)"
mergecap -a -F pcap -w "$WORK/mixed.pcap" "$WORK/http.pcap" "$WORK/dns.pcap" "$WORK/icmp.pcap" \
    "$WORK/tls.pcap" "$WORK/ssh-like.pcap" "$WORK/vlan.pcap"

# ---------------------------------------------------------------------------------------------
# check and publish
FILES=(http dns icmp tls ssh-like vlan lo-any lo-any-sll raw mixed)
total=0
for f in "${FILES[@]}"; do
    p=$WORK/$f.pcap
    tcpdump -nr "$p" >/dev/null 2>&1 || die "tcpdump cannot read $f.pcap"
    tshark -r "$p" >/dev/null 2>&1 || die "tshark cannot read $f.pcap"
    size=$(stat -c %s "$p")
    ((size < 200 * 1024)) || die "$f.pcap is $size bytes (limit 200 KB)"
    total=$((total + size))
done
((total < 1024 * 1024)) || die "total size $total bytes (limit 1 MB)"
for f in "${FILES[@]}"; do
    cp "$WORK/$f.pcap" "$OUT/$f.pcap.new"
    chmod 644 "$OUT/$f.pcap.new"
done
for f in "${FILES[@]}"; do mv -f "$OUT/$f.pcap.new" "$OUT/$f.pcap"; done
for f in "${FILES[@]}"; do
    IFS=$'\t' read -r _ encap count < <(capinfos -T -r -M -E -c "$OUT/$f.pcap")
    printf '%-16s %5s packets  %7s bytes  %s\n' "$f.pcap" "$count" "$(stat -c %s "$OUT/$f.pcap")" \
        "$encap"
done
log "done: ${#FILES[@]} files, $total bytes in $OUT"
