"""Ask a real dnsmasq, over real DHCPv6, which clients it would answer.

dnsmasq can apply a ``dhcp-host=<mac>`` record (and the ``*:*:*:*:*:*``
wildcard) to a DHCPv6 client only if it learns the client's MAC
(``src/rfc3315.c:dhcp6_maybe_relay``):

- **on-link** client: from the kernel neighbour table entry for the
  client's link-local source address; if there is none, dnsmasq sends up
  to five neighbour solicitations 100 ms apart and looks again
  (``src/dhcp6.c:get_client_mac``).  Entries in state NOARP, INCOMPLETE or
  FAILED are skipped (``src/netlink.c:iface_enumerate``);
- **relayed** client: only from an RFC 6939 client link-layer address
  option (79) in the RELAY-FORW; the peer address is never looked at.

This module drives both paths with hand-built packets so a test controls
exactly what dnsmasq can learn:

- :func:`run_probe` (this file run with ``-m`` in the client namespace, and
  :func:`probe`): one AF_PACKET socket on the client veth sends, per
  :class:`V6Client`, an Ethernet/IPv6/UDP SOLICIT from the client's MAC and
  link-local address (default: EUI-64 from the MAC; any other can be given)
  with the client's DUID (DUID-LL from the MAC by default, or
  :func:`duid_en` / :func:`duid_uuid`) and one IA_NA.  It answers neighbour
  solicitations for a client's address with that client's MAC only if
  ``answer_nd`` is set -- i.e. it plays a real host, which lets dnsmasq
  learn the MAC; with ``answer_nd`` false nobody answers, so dnsmasq cannot
  learn it (then the server namespace needs a NOARP neighbour entry,
  :func:`add_noarp_neighbour`, or dnsmasq's ADVERTISE could not be
  delivered at all -- the kernel would have no link-layer address either).
  ADVERTISEs are matched on transaction id.
- ``relay=`` mode: the same SOLICITs wrapped in RELAY-FORW messages sent
  from a UDP socket bound to ``relay_addr`` port 547 (an address on the
  client veth) to dnsmasq's unicast address, with or without option 79
  (``V6Client.rfc6939``); RELAY-REPLs carry the ADVERTISE back.
- :func:`dhclient6_probe`: ISC ``dhclient -6`` on a macvlan with a chosen
  MAC, as the real on-link client.

Silence means "not answered"; unanswered clients are retried.  Only
SOLICITs are sent, so no lease is taken.  Addresses: a ULA prefix
(:data:`PREFIX`) plus link-local addresses, only inside test namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import itertools
import json
import os
import random
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid as uuid_mod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from pxefilterd_harness.dhcp_probe import (
    PACKET_IGNORE_OUTGOING, PACKET_OUTGOING, SOL_PACKET, ProbeError,
    _checksum, normalize_mac, output_lines)

if TYPE_CHECKING:
    from .netns import DhcpNetwork

ETH_P_IPV6 = 0x86DD
#: The ULA /64 the tests use; dnsmasq's address is ::1, a relay's ::2.
PREFIX = "fd00:5afe:1::"
SERVER_ADDRESS6 = PREFIX + "1"
RELAY_ADDRESS6 = PREFIX + "2"
#: A DHCPv6 address range inside :data:`PREFIX` for ``dhcp-range``.
RANGE6 = (PREFIX + "100", PREFIX + "1ff")
ALL_DHCP_SERVERS = "ff02::1:2"

SOLICIT, ADVERTISE, REPLY = 1, 2, 7
RELAY_FORW, RELAY_REPL = 12, 13
OPT_CLIENTID, OPT_IA_NA, OPT_IAADDR, OPT_ORO = 1, 3, 5, 6
OPT_ELAPSED_TIME, OPT_RELAY_MSG, OPT_STATUS_CODE = 8, 9, 13
OPT_INTERFACE_ID, OPT_CLIENT_LINKLAYER_ADDR = 18, 79
ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT = 135, 136
ARPHRD_ETHER = 1

_macvlan_counter = itertools.count()


@dataclass(frozen=True)
class V6Client:
    """One simulated DHCPv6 client.

    ``name`` keys the results; ``mac`` is the Ethernet source (and the MAC
    the client claims in ND answers and option 79); ``link_local`` defaults
    to the EUI-64 address of ``mac``; ``duid`` (colon hex) defaults to
    DUID-LL of ``mac``; ``answer_nd``: answer neighbour solicitations for
    ``link_local`` (on-link mode); ``rfc6939``: include option 79 with
    ``mac`` in the RELAY-FORW (relay mode).
    """

    name: str
    mac: str
    link_local: str | None = None
    duid: str | None = None
    iaid: int = 1
    answer_nd: bool = True
    rfc6939: bool = False

    def resolved(self) -> V6Client:
        """Return a copy with defaults filled in and values normalised."""
        mac = normalize_mac(self.mac)
        ll = self.link_local or eui64_link_local(mac)
        ll = str(ipaddress.IPv6Address(ll))
        duid = (self.duid or duid_ll(mac)).lower()
        return V6Client(self.name, mac, ll, duid, self.iaid,
                        self.answer_nd, self.rfc6939)


@dataclass(frozen=True)
class Advertise:
    """What dnsmasq answered one client (``advertise`` False = silent)."""

    name: str
    advertise: bool
    address: str | None = None
    status: int | None = None
    attempts: int = 0


# ---------------------------------------------------------------- ids

def eui64_link_local(mac: str) -> str:
    """Return the modified-EUI-64 link-local address for *mac*."""
    b = bytearray(bytes.fromhex(normalize_mac(mac).replace(":", "")))
    b[0] ^= 0x02
    iid = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + iid))


def duid_ll(mac: str) -> str:
    """DUID-LL (type 3, hardware type 1) of *mac*, colon hex."""
    raw = bytes.fromhex(normalize_mac(mac).replace(":", ""))
    return (struct.pack("!HH", 3, ARPHRD_ETHER) + raw).hex(":")


def duid_en(enterprise: int, identifier: bytes) -> str:
    """DUID-EN (type 2): enterprise number + identifier, colon hex."""
    return (struct.pack("!HI", 2, enterprise) + identifier).hex(":")


def duid_uuid(value: str) -> str:
    """DUID-UUID (type 4, RFC 6355) of *value* (a UUID string)."""
    return (struct.pack("!H", 4) + uuid_mod.UUID(value).bytes).hex(":")


# ---------------------------------------------------------------- packets

def _opt(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def _ip6(addr: str) -> bytes:
    return ipaddress.IPv6Address(addr).packed


def build_solicit(client: V6Client, xid: int) -> bytes:
    """Return a DHCPv6 SOLICIT message (no UDP/IP headers)."""
    duid = bytes.fromhex(client.duid.replace(":", ""))
    return (bytes([SOLICIT]) + xid.to_bytes(3, "big")
            + _opt(OPT_CLIENTID, duid)
            + _opt(OPT_ELAPSED_TIME, b"\0\0")
            + _opt(OPT_IA_NA, struct.pack("!III", client.iaid, 0, 0))
            + _opt(OPT_ORO, struct.pack("!HH", 23, 24)))


def build_relay_forw(client: V6Client, message: bytes,
                     link_address: str) -> bytes:
    """Wrap *message* in a RELAY-FORW for *client* (option 79 if asked)."""
    opts = _opt(OPT_INTERFACE_ID, b"pxf-relay")
    if client.rfc6939:
        opts += _opt(OPT_CLIENT_LINKLAYER_ADDR,
                     struct.pack("!H", ARPHRD_ETHER)
                     + bytes.fromhex(client.mac.replace(":", "")))
    opts += _opt(OPT_RELAY_MSG, message)
    return (bytes([RELAY_FORW, 0]) + _ip6(link_address)
            + _ip6(client.link_local) + opts)


def _l4_checksum(src: bytes, dst: bytes, proto: int, data: bytes) -> int:
    pseudo = src + dst + struct.pack("!IxxxB", len(data), proto)
    return _checksum(pseudo + data)


def _eth_ip6(src_mac: bytes, dst_mac: bytes, src: bytes, dst: bytes,
             proto: int, hop: int, payload: bytes) -> bytes:
    ip = struct.pack("!IHBB", 0x60000000, len(payload), proto, hop) \
        + src + dst
    return dst_mac + src_mac + struct.pack("!H", ETH_P_IPV6) + ip + payload


def build_solicit_frame(client: V6Client, xid: int) -> bytes:
    """Ethernet/IPv6/UDP frame: SOLICIT from the client to ff02::1:2."""
    msg = build_solicit(client, xid)
    src, dst = _ip6(client.link_local), _ip6(ALL_DHCP_SERVERS)
    udp = struct.pack("!HHHH", 546, 547, 8 + len(msg), 0) + msg
    csum = _l4_checksum(src, dst, 17, udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    mac = bytes.fromhex(client.mac.replace(":", ""))
    return _eth_ip6(mac, b"\x33\x33\x00\x01\x00\x02", src, dst, 17, 1, udp)


def build_neighbour_advert(client: V6Client, dst: bytes,
                           dst_mac: bytes) -> bytes:
    """Solicited NA for the client's link-local, with its MAC as TLLA."""
    mac = bytes.fromhex(client.mac.replace(":", ""))
    src = _ip6(client.link_local)
    solicited = dst != b"\0" * 16
    if not solicited:
        dst, dst_mac = _ip6("ff02::1"), b"\x33\x33\x00\x00\x00\x01"
    flags = (0x40000000 if solicited else 0) | 0x20000000
    icmp = struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, flags) + src \
        + bytes([2, 1]) + mac
    csum = _l4_checksum(src, dst, 58, icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    return _eth_ip6(mac, dst_mac, src, dst, 58, 255, icmp)


def parse_options(data: bytes) -> list[tuple[int, bytes]]:
    """Split DHCPv6 options into ``[(code, value)]`` (stops when short)."""
    out, i = [], 0
    while i + 4 <= len(data):
        code, length = struct.unpack_from("!HH", data, i)
        out.append((code, data[i + 4:i + 4 + length]))
        i += 4 + length
    return out


def parse_reply_message(msg: bytes) -> tuple[int, dict] | None:
    """Parse an ADVERTISE/REPLY (unwrapping RELAY-REPL); ``(xid, info)``.

    *info*: ``address`` (first IAADDR of the first IA_NA) and ``status``
    (STATUS_CODE inside the IA_NA, or at top level, if any).
    """
    if not msg:
        return None
    if msg[0] == RELAY_REPL and len(msg) >= 34:
        for code, value in parse_options(msg[34:]):
            if code == OPT_RELAY_MSG:
                return parse_reply_message(value)
        return None
    if msg[0] not in (ADVERTISE, REPLY) or len(msg) < 4:
        return None
    xid = int.from_bytes(msg[1:4], "big")
    info: dict = {"address": None, "status": None}
    for code, value in parse_options(msg[4:]):
        if code == OPT_STATUS_CODE and len(value) >= 2:
            info["status"] = struct.unpack_from("!H", value)[0]
        if code == OPT_IA_NA and len(value) >= 12:
            for sub, sval in parse_options(value[12:]):
                if sub == OPT_IAADDR and len(sval) >= 16 \
                        and info["address"] is None:
                    info["address"] = str(ipaddress.IPv6Address(sval[:16]))
                if sub == OPT_STATUS_CODE and len(sval) >= 2:
                    info["status"] = struct.unpack_from("!H", sval)[0]
    return xid, info


# ---------------------------------------------------------------- probe

def _open_packet_socket(iface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                         socket.htons(ETH_P_IPV6))
    try:
        sock.bind((iface, ETH_P_IPV6))
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def run_probe(iface: str, clients: list[V6Client], timeout: float = 1.5,
              retries: int = 2, relay: dict | None = None
              ) -> dict[str, dict]:
    """Send SOLICITs for *clients* from *iface* (inside the client netns).

    On-link mode (``relay`` None): raw frames, answering ND as described in
    the module docstring.  Relay mode: *relay* is ``{"relay_addr",
    "server_addr", "link_address"}``; RELAY-FORWs go from
    ``[relay_addr]:547`` to ``[server_addr]:547``.  At most ``1 + retries``
    rounds of *timeout* seconds.  Returns ``{name: {"advertise", "address",
    "status", "attempts"}}``.
    """
    clients = [c.resolved() for c in clients]
    xid_base = random.getrandbits(24)
    by_xid = {(xid_base + i) & 0xFFFFFF: i for i in range(len(clients))}
    xids = list(by_xid)
    answers: list[dict | None] = [None] * len(clients)
    attempts = [0] * len(clients)
    nd_answer = {_ip6(c.link_local): c for c in clients if c.answer_nd}
    raw = _open_packet_socket(iface)
    udp = None
    if relay:
        udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        udp.bind((relay["relay_addr"], 547))
        udp.setblocking(False)

    def handle_frame(frame: bytes, pkttype: int) -> None:
        if pkttype == PACKET_OUTGOING or len(frame) < 54 \
                or frame[12:14] != b"\x86\xdd":
            return
        proto, src = frame[20], frame[22:38]
        if proto == 58 and len(frame) >= 78 \
                and frame[54] == ND_NEIGHBOR_SOLICIT:
            client = nd_answer.get(frame[62:78])
            if client is not None:
                raw.send(build_neighbour_advert(client, src, frame[6:12]))
        elif proto == 17 and len(frame) >= 62 and relay is None:
            sport, dport = struct.unpack_from("!HH", frame, 54)
            if sport == 547 and dport == 546:
                record(frame[62:])

    def record(msg: bytes) -> None:
        parsed = parse_reply_message(msg)
        if parsed is None:
            return
        idx = by_xid.get(parsed[0])
        if idx is not None and answers[idx] is None:
            answers[idx] = parsed[1]

    def drain(wait: float) -> None:
        socks = [raw] + ([udp] if udp else [])
        if wait > 0:
            select.select(socks, [], [], wait)
        while True:
            try:
                frame, addr = raw.recvfrom(65535)
            except BlockingIOError:
                break
            handle_frame(frame, addr[2])
        while udp is not None:
            try:
                msg, _ = udp.recvfrom(65535)
            except BlockingIOError:
                break
            record(msg)

    def send(i: int) -> None:
        client = clients[i]
        if relay is None:
            raw.send(build_solicit_frame(client, xids[i]))
        else:
            msg = build_relay_forw(client, build_solicit(client, xids[i]),
                                   relay["link_address"])
            udp.sendto(msg, (relay["server_addr"], 547))

    try:
        pending = list(range(len(clients)))
        for _ in range(1 + retries):
            if not pending:
                break
            for i in pending:
                send(i)
                attempts[i] += 1
                drain(0.01)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and \
                    any(answers[i] is None for i in pending):
                drain(min(0.05, deadline - time.monotonic()))
            pending = [i for i in pending if answers[i] is None]
        drain(0)
    finally:
        raw.close()
        if udp is not None:
            udp.close()
    out = {}
    for i, client in enumerate(clients):
        info = answers[i] or {}
        out[client.name] = {"advertise": bool(answers[i]),
                            "address": info.get("address"),
                            "status": info.get("status"),
                            "attempts": attempts[i]}
    return out


def probe(network: DhcpNetwork, clients: list[V6Client], *,
          timeout: float = 1.5, retries: int = 2, relay: bool = False,
          python: str | None = None) -> dict[str, Advertise]:
    """Run :func:`run_probe` in *network*'s client namespace.

    With *relay*, the RELAY-FORWs go from :data:`RELAY_ADDRESS6` (which
    :func:`setup_ipv6` puts on the client veth) to :data:`SERVER_ADDRESS6`
    with link-address :data:`RELAY_ADDRESS6`.  Returns ``{name:
    Advertise}``; raises :class:`~.dhcp_probe.ProbeError` on failure.
    """
    spec = {"iface": network.client_iface, "timeout": timeout,
            "retries": retries,
            "clients": [asdict(c) for c in clients],
            "relay": {"relay_addr": RELAY_ADDRESS6,
                      "server_addr": SERVER_ADDRESS6,
                      "link_address": RELAY_ADDRESS6} if relay else None}
    argv = network.client_argv([python or sys.executable, "-I", "-m",
                                "pxefilterd_harness.dhcp6_probe"])
    # dnsmasq spends up to 0.5 s per SOLICIT whose MAC it cannot learn.
    budget = (1 + retries) * (timeout + 0.6 * len(clients)) + 30
    try:
        res = subprocess.run(argv, input=json.dumps(spec),
                             capture_output=True, text=True,
                             timeout=budget, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ProbeError(f"DHCPv6 probe timed out after {budget:.0f}s") \
            from exc
    if res.returncode != 0:
        raise ProbeError(f"DHCPv6 probe exited {res.returncode}: "
                         f"{res.stderr}")
    try:
        data = json.loads(res.stdout)
    except ValueError as exc:
        raise ProbeError(f"DHCPv6 probe printed no JSON: "
                         f"{res.stdout[:500]!r}") from exc
    return {c.name: Advertise(name=c.name, **data[c.name]) for c in clients}


# ---------------------------------------------------------------- netns

def _ip(argv: list[str]) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                         check=False)
    if res.returncode != 0:
        raise ProbeError(f"{argv}: {res.stderr.strip()}")


def setup_ipv6(network: DhcpNetwork) -> None:
    """Give both veth ends IPv6 addresses usable at once (no DAD).

    Server: ``fe80::1`` and :data:`SERVER_ADDRESS6`/64; client:
    :data:`RELAY_ADDRESS6`/64 (only the relay mode uses it).  The kernel's
    own, still tentative link-local address of the server veth is replaced
    so dnsmasq can reply from a valid link-local address immediately.
    """
    srv, cli = network.server_ns, network.client_ns
    _ip(["ip", "-n", srv, "-6", "addr", "flush", "dev",
         network.server_iface, "scope", "link"])
    _ip(["ip", "-n", srv, "addr", "add", "fe80::1/64", "dev",
         network.server_iface, "nodad"])
    _ip(["ip", "-n", srv, "addr", "add", f"{SERVER_ADDRESS6}/64", "dev",
         network.server_iface, "nodad"])
    _ip(["ip", "-n", cli, "addr", "add", f"{RELAY_ADDRESS6}/64", "dev",
         network.client_iface, "nodad"])


def add_noarp_neighbour(network: DhcpNetwork, address: str,
                        mac: str) -> None:
    """Server-side NOARP neighbour entry *address* -> *mac*.

    The kernel uses it to deliver dnsmasq's replies, but dnsmasq ignores
    NOARP entries when looking for a client's MAC, so for dnsmasq the MAC
    stays unknown (as for a client it cannot resolve).
    """
    _ip(["ip", "-n", network.server_ns, "neigh", "replace", address,
         "dev", network.server_iface, "lladdr", normalize_mac(mac),
         "nud", "noarp"])


def dnsmasq_options(lease_time: str = "2m",
                    tags: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``extra_options`` for :class:`~.dnsmasq.DnsmasqInstance`: a DHCPv6
    range in :data:`PREFIX`, restricted to *tags* (``tag:known``) if any."""
    prefix = "".join(f"tag:{t}," for t in tags)
    return (f"dhcp-range={prefix}{RANGE6[0]},{RANGE6[1]},64,{lease_time}",)


# ---------------------------------------------------------------- dhclient

@dataclass(frozen=True)
class Dhclient6Result:
    """Outcome of :func:`dhclient6_probe` (``output``: dhclient's log)."""

    mac: str
    advertise: bool
    bound: bool
    address: str | None
    seconds: float
    output: str


def dhclient6_probe(network: DhcpNetwork, mac: str, *, timeout: float = 5,
                    link_local: str | None = None,
                    dhclient: str = "dhclient") -> Dhclient6Result:
    """Ask for a DHCPv6 lease for *mac* with ISC ``dhclient -6``, once.

    Creates macvlan ``d6cN`` with address *mac* in the client namespace
    (DAD off; with *link_local*, the kernel's EUI-64 address is replaced by
    that one), runs ``dhclient -6 -1 -d -v -D LL`` on it with its own
    lease/pid files and ``-sf /bin/true``, and stops it (SIGTERM, then
    SIGKILL, by PID) once bound or after *timeout* seconds.  The macvlan and
    temp dir are always removed.
    """
    mac = normalize_mac(mac)
    iface = f"d6c{next(_macvlan_counter)}"
    ns = network.client_ns
    tmp = tempfile.mkdtemp(prefix="pxf-dhclient6-")
    t0 = time.monotonic()
    output: list[str] = []
    advertise = bound = False
    address = None
    try:
        cmds = [["ip", "-n", ns, "link", "add", "link", network.client_iface,
                 "name", iface, "address", mac, "type", "macvlan", "mode",
                 "bridge"],
                network.client_argv(["sysctl", "-qw",
                                     f"net.ipv6.conf.{iface}.accept_dad=0"])]
        if link_local:
            cmds += [["ip", "-n", ns, "link", "set", iface, "addrgenmode",
                      "none"],
                     ["ip", "-n", ns, "addr", "add", f"{link_local}/64",
                      "dev", iface, "nodad"]]
        cmds.append(["ip", "-n", ns, "link", "set", iface, "up"])
        for cmd in cmds:
            _ip(cmd)
        conf = os.path.join(tmp, "dhclient6.conf")
        with open(conf, "w") as f:
            f.write("initial-interval 1;\n")
        argv = network.client_argv([
            dhclient, "-6", "-1", "-d", "-v", "-D", "LL", "-cf", conf,
            "-sf", "/bin/true", "-lf", os.path.join(tmp, "leases"),
            "-pf", os.path.join(tmp, "dhclient.pid"), iface])
        with contextlib.closing(output_lines(
                argv, time.monotonic() + timeout)) as lines:
            for line in lines:
                output.append(line)
                if re.search(r"RCV: Advertise", line):
                    advertise = True
                m = re.search(r"RCV: .*X-- IAADDR (\S+)", line)
                if m and address is None:
                    address = m.group(1)
                if re.search(r"Bound to lease|bound to", line,
                             re.IGNORECASE):
                    bound = True
                    break
    finally:
        subprocess.run(["ip", "-n", ns, "link", "del", iface],
                       capture_output=True, timeout=10, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return Dhclient6Result(mac=mac, advertise=advertise or bound,
                           bound=bound, address=address,
                           seconds=round(time.monotonic() - t0, 3),
                           output="\n".join(output))


# ---------------------------------------------------------------- script

def main(argv: list[str] | None = None) -> int:
    """Read a JSON probe spec on stdin, print JSON results (exit 0)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    spec = json.load(sys.stdin)
    clients = [V6Client(**c) for c in spec["clients"]]
    results = run_probe(spec["iface"], clients, spec.get("timeout", 1.5),
                        spec.get("retries", 2), spec.get("relay"))
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
