"""Ask a real dnsmasq, over real DHCP, which MACs it would serve.

Two clients, for two jobs:

- **Raw probe** (this file run as a script, and :func:`probe`): one AF_PACKET
  socket on the client veth sends hand-built Ethernet/IPv4/UDP/BOOTP
  DHCPDISCOVERs, one per MAC, with that MAC as chaddr *and* Ethernet source,
  the broadcast flag, a per-MAC xid, and PXE-looking options (53=DISCOVER,
  55 parameter list, 60 ``PXEClient:Arch:00000:UNDI:002001``).  It collects
  OFFERs (UDP 67->68, option 53=2) matched on xid + chaddr.  It classifies
  thousands of MACs per call, so it is what tests use to check a whole
  hostsdir against dnsmasq.  dnsmasq never answers a denied (``ignore``) MAC,
  so *silence* means deny; a lost frame would look the same, hence sends are
  paced (default 1000/s), the socket gets a large receive buffer and ignores
  its own outgoing frames, and MACs without an offer are retried
  (``retries``, default 3) before being reported as ``offer: false``.
  Only DISCOVERs are sent, so no lease is ever taken.  Standard library only.

- **dhclient** (:func:`dhclient_probe`): the real ISC client for one MAC,
  from a macvlan sub-interface with that MAC in the client namespace, in
  one-shot mode with a timeout.  It does the full DISCOVER/OFFER/REQUEST/ACK
  exchange (and takes a real lease), so it cross-checks that the raw probe's
  notion of "offered" is what a real client experiences.  It costs seconds
  per MAC (a denied MAC costs the whole timeout), so it is used sparingly.

Script usage, inside the client namespace (JSON on stdout)::

    ip netns exec CLI python3 -I dhcp_probe.py --iface veth-cli \\
        --mac aa:bb:cc:dd:ee:01 --mac aa:bb:cc:dd:ee:02 \\
        --timeout 1.5 --retries 3 --json
    # {"aa:bb:cc:dd:ee:01": {"offer": true, "file": "pxefilterd-test.0",
    #   "yiaddr": "198.51.100.123", "server": "198.51.100.1", "attempts": 1},
    #  ...}

``--macs-file PATH`` (``-`` = stdin, one MAC per line) avoids huge argv;
``--stats`` prints counters as JSON on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import itertools
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from .netns import DhcpNetwork

ETH_P_IP = 0x0800
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = 33
RCVBUF_BYTES = 32 * 1024 * 1024

PXE_VENDOR_CLASS = b"PXEClient:Arch:00000:UNDI:002001"
# What a PXE ROM typically asks for (RFC 4578 / PXE 2.1 clients).
PARAMETER_REQUEST_LIST = bytes(
    [1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 43, 54, 60, 66, 67,
     128, 129, 130, 131, 132, 133, 134, 135])
MAGIC_COOKIE = b"\x63\x82\x53\x63"
DHCPDISCOVER, DHCPOFFER = 1, 2
_BOOTP_MIN = 300

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_macvlan_counter = itertools.count()


class ProbeError(RuntimeError):
    """The probe could not run (bad arguments, subprocess failure/timeout)."""


@dataclass(frozen=True)
class Offer:
    """What dnsmasq answered for one MAC.

    ``offer`` is False when no OFFER arrived after all attempts (= denied);
    then ``file``, ``yiaddr`` and ``server`` are ``None``.
    """

    mac: str
    offer: bool
    file: str | None = None
    yiaddr: str | None = None
    server: str | None = None
    attempts: int = 0


def normalize_mac(mac: str) -> str:
    """Return *mac* lowercased; ValueError unless ``xx:xx:xx:xx:xx:xx``."""
    norm = mac.strip().lower()
    if not _MAC_RE.match(norm):
        raise ValueError(f"not a colon-separated MAC: {mac!r}")
    return norm


# ---------------------------------------------------------------- frames

def _checksum(data: bytes) -> int:
    """RFC 1071 internet checksum of *data*."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_discover(mac: bytes, xid: int) -> bytes:
    """Return one Ethernet frame: broadcast DHCPDISCOVER from *mac* (6 bytes).

    IPv4 0.0.0.0:68 -> 255.255.255.255:67, BOOTP broadcast flag set,
    options 53, 55, 60 (PXE vendor class), 93 (arch 0), 255; UDP checksum
    computed; BOOTP padded to the 300-byte minimum.
    """
    options = (bytes([53, 1, DHCPDISCOVER])
               + bytes([55, len(PARAMETER_REQUEST_LIST)])
               + PARAMETER_REQUEST_LIST
               + bytes([60, len(PXE_VENDOR_CLASS)]) + PXE_VENDOR_CLASS
               + bytes([93, 2, 0, 0])
               + b"\xff")
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0,
                        0x8000, b"", b"", b"", b"", mac, b"", b"")
    bootp += MAGIC_COOKIE + options
    bootp += b"\0" * max(0, _BOOTP_MIN - len(bootp))
    src, dst = b"\0\0\0\0", b"\xff\xff\xff\xff"
    udp_len = 8 + len(bootp)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    udp_csum = _checksum(pseudo + struct.pack("!HHHH", 68, 67, udp_len, 0)
                         + bootp) or 0xFFFF
    udp = struct.pack("!HHHH", 68, 67, udp_len, udp_csum) + bootp
    ip_hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0x10, 20 + udp_len, 0, 0,
                         64, 17, 0, src, dst)
    ip_hdr = ip_hdr[:10] + struct.pack("!H", _checksum(ip_hdr)) + ip_hdr[12:]
    return b"\xff" * 6 + mac + struct.pack("!H", ETH_P_IP) + ip_hdr + udp


def parse_reply(frame: bytes) -> dict | None:
    """Parse an Ethernet frame holding a DHCP reply (UDP 67->68,
    BOOTREPLY); return its fields, or ``None`` for anything else.

    The dict has ``xid``, ``htype``, ``hlen``, ``chaddr`` (the 16-byte
    field),
    ``yiaddr`` (dotted quad or None), ``file`` (the boot file: the header
    field, else option 67; None if neither) and ``options`` (``{code:
    bytes}``).  Also used by the InfiniBand prober.
    """
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00":
        return None
    if frame[23] != 17:
        return None
    u = 14 + (frame[14] & 0x0F) * 4
    sport, dport = struct.unpack_from("!HH", frame, u)
    b = u + 8
    if sport != 67 or dport != 68 or len(frame) < b + 240 \
            or frame[b] != 2 or frame[b + 236:b + 240] != MAGIC_COOKIE:
        return None
    htype, hlen = frame[b + 1], frame[b + 2]
    (xid,) = struct.unpack_from("!I", frame, b + 4)
    yiaddr = socket.inet_ntoa(frame[b + 16:b + 20])
    bootfile = frame[b + 108:b + 236].split(b"\0", 1)[0]
    opts: dict[int, bytes] = {}
    i, end = b + 240, len(frame)
    while i < end:
        code = frame[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= end:
            break
        length = frame[i + 1]
        opts[code] = frame[i + 2:i + 2 + length]
        i += 2 + length
    if not bootfile and 67 in opts:
        bootfile = opts[67].split(b"\0", 1)[0]
    return {"xid": xid, "htype": htype, "hlen": hlen,
            "chaddr": frame[b + 28:b + 44],
            "yiaddr": yiaddr if yiaddr != "0.0.0.0" else None,
            "file": bootfile.decode(errors="replace") or None,
            "options": opts}


def parse_offer(frame: bytes) -> tuple[int, bytes, dict] | None:
    """Parse an Ethernet frame; return ``(xid, chaddr, info)`` for an OFFER.

    *info* has ``file`` (str or None), ``yiaddr`` and ``server`` (dotted
    quads or None).  Returns ``None`` for anything that is not a
    well-formed DHCPOFFER (UDP 67->68, BOOTREPLY, option 53 = 2).
    """
    reply = parse_reply(frame)
    if reply is None or reply["options"].get(53) != bytes([DHCPOFFER]):
        return None
    server = reply["options"].get(54, b"")
    return reply["xid"], reply["chaddr"][:6], {
        "file": reply["file"],
        "yiaddr": reply["yiaddr"],
        "server": socket.inet_ntoa(server) if len(server) == 4 else None,
    }


# ---------------------------------------------------------------- raw probe

def _open_socket(iface: str) -> tuple[socket.socket, bool]:
    """Open the AF_PACKET socket; return it and whether outgoing is ignored."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                         socket.htons(ETH_P_IP))
    try:
        sock.bind((iface, ETH_P_IP))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            ignores_outgoing = True
        except OSError:
            ignores_outgoing = False
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, ignores_outgoing


def run_probe(iface: str, macs: list[str], timeout: float = 1.5,
              retries: int = 3, rate: float = 1000.0
              ) -> tuple[dict[str, dict], dict]:
    """Probe *macs* from *iface* (must run inside the client namespace).

    Each round sends one DISCOVER per still-unanswered MAC at most *rate*
    frames/s, then listens *timeout* seconds after the last send (stopping
    early when all are answered); at most ``1 + retries`` rounds.  Offers
    arriving late, in any round, still count.  Returns ``(results, stats)``:
    results maps each MAC to ``{"offer", "file", "yiaddr", "server",
    "attempts"}``.  Raises OSError if the socket cannot be opened or used.
    """
    macs = list(dict.fromkeys(normalize_mac(m) for m in macs))
    xid_base = random.getrandbits(32)
    frames, by_xid = [], {}
    for i, mac in enumerate(macs):
        xid = (xid_base + i) & 0xFFFFFFFF
        raw = bytes.fromhex(mac.replace(":", ""))
        frames.append(build_discover(raw, xid))
        by_xid[xid] = (i, raw)
    answers: list[dict | None] = [None] * len(macs)
    attempts = [0] * len(macs)
    stats = {"tx": 0, "rx": 0, "offers": 0, "duplicates": 0, "rounds": 0,
             "tx_retry_enobufs": 0}
    interval = 1.0 / rate
    sock, ignores_outgoing = _open_socket(iface)

    def drain(wait: float) -> None:
        if wait > 0:
            select.select([sock], [], [], wait)
        while True:
            try:
                frame, addr = sock.recvfrom(4096)
            except BlockingIOError:
                return
            if not ignores_outgoing and addr[2] == PACKET_OUTGOING:
                continue
            stats["rx"] += 1
            parsed = parse_offer(frame)
            if parsed is None:
                continue
            xid, chaddr, info = parsed
            hit = by_xid.get(xid)
            if hit is None or hit[1] != chaddr:
                continue
            if answers[hit[0]] is None:
                answers[hit[0]] = info
                stats["offers"] += 1
            else:
                stats["duplicates"] += 1

    t_start = time.monotonic()
    try:
        pending = list(range(len(macs)))
        for _ in range(1 + retries):
            if not pending:
                break
            stats["rounds"] += 1
            next_send = time.monotonic()
            for idx in pending:
                now = time.monotonic()
                while now < next_send:
                    drain(next_send - now)
                    now = time.monotonic()
                if answers[idx] is not None:
                    continue  # a late offer from an earlier round arrived
                while True:
                    try:
                        sock.send(frames[idx])
                        break
                    except OSError as exc:
                        if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):
                            raise
                        stats["tx_retry_enobufs"] += 1
                        drain(0.005)
                stats["tx"] += 1
                attempts[idx] += 1
                next_send = max(next_send + interval, now)
            deadline = time.monotonic() + timeout
            while True:
                now = time.monotonic()
                if now >= deadline or all(answers[i] is not None
                                          for i in pending):
                    break
                drain(min(0.05, deadline - now))
            pending = [i for i in pending if answers[i] is None]
        drain(0)
        try:
            _, drops = struct.unpack(
                "II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            stats["socket_drops"] = drops
        except OSError:
            stats["socket_drops"] = None
    finally:
        sock.close()
    stats["seconds"] = round(time.monotonic() - t_start, 3)
    results = {}
    for i, mac in enumerate(macs):
        info = answers[i]
        results[mac] = {"offer": info is not None, "attempts": attempts[i],
                        **(info or {"file": None, "yiaddr": None,
                                    "server": None})}
    return results, stats


def probe(network: DhcpNetwork, macs: list[str] | tuple[str, ...], *,
          timeout: float = 1.5, retries: int = 3, rate: float = 1000.0,
          python: str | None = None, stats: dict | None = None
          ) -> dict[str, Offer]:
    """Run the raw probe for *macs* in *network*'s client namespace.

    Runs this file as a script with *python* (default: the current
    interpreter, ``-I``) under ``ip netns exec``, MACs on stdin, with a
    subprocess timeout derived from the number of MACs, *rate*, *timeout*
    and *retries*.  Returns ``{mac: Offer}`` for every (normalised) MAC.
    If *stats* is a dict, it is updated with the probe's counters (tx, rx,
    offers, socket_drops, seconds, ...).  Raises ValueError for a malformed
    MAC and :class:`ProbeError` if the probe fails or times out.
    """
    norm = list(dict.fromkeys(normalize_mac(m) for m in macs))
    if not norm:
        return {}
    argv = network.client_argv([
        python or sys.executable, "-I", os.path.abspath(__file__),
        "--iface", network.client_iface, "--macs-file", "-",
        "--timeout", str(timeout), "--retries", str(retries),
        "--rate", str(rate), "--json", "--stats"])
    budget = (1 + retries) * (len(norm) / rate + timeout) * 1.5 + 30
    try:
        res = subprocess.run(argv, input="\n".join(norm) + "\n",
                             capture_output=True, text=True,
                             timeout=budget, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ProbeError(f"probe of {len(norm)} MACs timed out after "
                         f"{budget:.0f}s") from exc
    if res.returncode != 0:
        raise ProbeError(f"probe exited {res.returncode}: {res.stderr}")
    try:
        data = json.loads(res.stdout)
    except ValueError as exc:
        raise ProbeError(f"probe printed no JSON: {res.stdout[:500]!r}") \
            from exc
    if stats is not None:
        for line in res.stderr.splitlines():
            if line.startswith("STATS "):
                stats.update(json.loads(line[6:]))
    return {mac: Offer(mac=mac, **data[mac]) for mac in norm}


# ---------------------------------------------------------------- dhclient

@dataclass(frozen=True)
class DhclientResult:
    """Outcome of :func:`dhclient_probe`.

    ``offer``: dhclient logged a DHCPOFFER; ``bound``: it completed
    REQUEST/ACK; ``address``: offered/bound IPv4; ``seconds``: wall time;
    ``output``: dhclient's verbose log.
    """

    mac: str
    offer: bool
    bound: bool
    address: str | None
    seconds: float
    output: str


def output_lines(argv: list[str], deadline: float) -> Iterator[str]:
    """Run *argv* (stdout and stderr together) and yield its output line by
    line until the monotonic *deadline* or the end of its output.

    The process is stopped (SIGTERM, SIGKILL after 3 s) when the generator
    ends or is closed: use it in ``contextlib.closing`` to stop it early.
    """
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    return
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                yield raw.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        proc.stdout.close()


def dhclient_probe(network: DhcpNetwork, mac: str, *, timeout: int = 6,
                   dhclient: str = "dhclient") -> DhclientResult:
    """Ask for a lease for *mac* with the real ISC dhclient, once.

    Creates macvlan ``dhcN`` with address *mac* on the client veth, runs
    ``dhclient -1 -d -v`` on it in the client namespace (own conf with
    ``timeout``, own lease/pid files in a temp dir, ``-sf /bin/true`` so no
    address is configured), and stops it (SIGTERM, then SIGKILL, by PID) as
    soon as it is bound, gives up, or *timeout* + 5 s pass.  A denied MAC
    takes about *timeout* seconds.  The macvlan and temp dir are always
    removed.  Raises ValueError for a bad MAC, ProbeError if the macvlan
    cannot be created.
    """
    mac = normalize_mac(mac)
    iface = f"dhc{next(_macvlan_counter)}"
    ns = network.client_ns
    tmp = tempfile.mkdtemp(prefix="pxf-dhclient-")
    t0 = time.monotonic()
    output: list[str] = []
    offer = bound = False
    address = None
    try:
        for cmd in (["ip", "-n", ns, "link", "add", "link",
                     network.client_iface, "name", iface, "address", mac,
                     "type", "macvlan", "mode", "bridge"],
                    ["ip", "-n", ns, "link", "set", iface, "up"]):
            res = subprocess.run(cmd, capture_output=True, text=True,
                                 timeout=10, check=False)
            if res.returncode != 0:
                raise ProbeError(f"{cmd}: {res.stderr.strip()}")
        conf = os.path.join(tmp, "dhclient.conf")
        with open(conf, "w") as f:
            f.write(f"timeout {int(timeout)};\nretry 1;\n"
                    "initial-interval 1;\n"
                    "send vendor-class-identifier "
                    f"\"{PXE_VENDOR_CLASS.decode()}\";\n"
                    "request subnet-mask, broadcast-address, routers;\n")
        argv = network.client_argv([
            dhclient, "-4", "-1", "-d", "-v", "-cf", conf, "-sf", "/bin/true",
            "-lf", os.path.join(tmp, "leases"),
            "-pf", os.path.join(tmp, "dhclient.pid"), iface])
        with contextlib.closing(output_lines(
                argv, time.monotonic() + timeout + 5)) as lines:
            for line in lines:
                output.append(line)
                m = re.search(r"DHCPOFFER of (\S+)", line)
                if m:
                    offer, address = True, m.group(1)
                m = re.search(r"bound to (\S+)", line)
                if m:
                    bound, address = True, m.group(1)
                    break
    finally:
        subprocess.run(["ip", "-n", ns, "link", "del", iface],
                       capture_output=True, timeout=10, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return DhclientResult(mac=mac, offer=offer or bound, bound=bound,
                          address=address,
                          seconds=round(time.monotonic() - t0, 3),
                          output="\n".join(output))


# ---------------------------------------------------------------- script

def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 = probe ran)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iface", required=True)
    parser.add_argument("--mac", action="append", default=[])
    parser.add_argument("--macs-file",
                        help="file with one MAC per line, '-' for stdin")
    parser.add_argument("--timeout", type=float, default=1.5,
                        help="seconds to wait after each round")
    parser.add_argument("--retries", type=int, default=3,
                        help="extra rounds for MACs without an offer")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="max DISCOVERs per second")
    parser.add_argument("--json", action="store_true",
                        help="print JSON (default: one line per MAC)")
    parser.add_argument("--stats", action="store_true",
                        help="print 'STATS {json}' on stderr")
    args = parser.parse_args(argv)
    macs = list(args.mac)
    if args.macs_file:
        stream = sys.stdin if args.macs_file == "-" \
            else open(args.macs_file)
        with stream:
            macs.extend(line.strip() for line in stream if line.strip())
    try:
        results, stats = run_probe(args.iface, macs, args.timeout,
                                   args.retries, args.rate)
    except ValueError as exc:
        parser.error(str(exc))
    if args.json:
        json.dump(results, sys.stdout)
        sys.stdout.write("\n")
    else:
        for mac, r in results.items():
            print(mac, "OFFER" if r["offer"] else "silent",
                  r["file"] or "-", r["yiaddr"] or "-")
    if args.stats:
        print("STATS " + json.dumps(stats), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
