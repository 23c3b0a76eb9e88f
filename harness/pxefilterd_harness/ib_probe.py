"""Ask a real dnsmasq which IPoIB (InfiniBand) DHCPv4 clients it would serve.

An IPoIB client (RFC 4390) cannot put its 20-byte hardware address into the
16-byte BOOTP ``chaddr``, so its requests carry ``htype`` 32
(ARPHRD_INFINIBAND), ``hlen`` 0, an all-zero ``chaddr``, the broadcast flag,
and identify the client only by option 61 (client identifier), typically 20
bytes: ``ff:00:00:00:00:00:02:00:00:02:c9:00`` + the 8-byte port GUID
(:func:`ib_client_id`).  ironic keeps exactly that value in a port's
``extra['client-id']``.

This prober sends such DHCPDISCOVERs from an AF_PACKET socket on an Ethernet
interface (the client veth of a :class:`~.netns.DhcpNetwork`): dnsmasq
receives DHCP on an ordinary UDP socket and only looks at the BOOTP payload
(``htype``/``hlen``/``chaddr``/options), never at the link type of the
interface or the Ethernet source address, so the frames are treated as IPoIB
requests.  With ``hlen`` 0 dnsmasq always answers by broadcast
(``src/dhcp.c:send_packet``), so OFFERs arrive as Ethernet broadcasts; they
are matched on ``xid`` (each client id gets its own).  Silence means deny;
unanswered ids are retried like :mod:`.dhcp_probe` does.  Only DISCOVERs are
sent, so no lease is ever taken.

Script usage, inside the client namespace (JSON on stdout)::

    ip netns exec CLI python3 -I -m pxefilterd_harness.ib_probe \\
        --iface veth-cli --client-id ff:00:...:c9:00:00:02:c9:03:00:0a:0b:0c \\
        --json

``--htype``/``--hlen``/``--chaddr`` override the IPoIB defaults (e.g. to
send an Ethernet-style request that *also* carries option 61).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import select
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pxefilterd_harness.dhcp_probe import (
    DHCPDISCOVER, DHCPOFFER, ETH_P_IP, MAGIC_COOKIE, PACKET_OUTGOING,
    PARAMETER_REQUEST_LIST, PXE_VENDOR_CLASS, ProbeError, _checksum,
    _open_socket, parse_reply)

if TYPE_CHECKING:
    from .netns import DhcpNetwork

#: ARPHRD_INFINIBAND, the BOOTP ``htype`` of IPoIB (RFC 4390).
HTYPE_INFINIBAND = 32
#: The 12-byte prefix of an IPoIB client id before the 8-byte port GUID:
#: type 0xff, IAID 0, DUID-LL-style 00:02 + Mellanox enterprise 00:00:02:c9.
IB_CLIENT_ID_PREFIX = "ff:00:00:00:00:00:02:00:00:02:c9:00"
_BOOTP_MIN = 300
_HEX_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2})*$")


@dataclass(frozen=True)
class IbOffer:
    """What dnsmasq answered for one client id (``offer`` False = silent)."""

    client_id: str
    offer: bool
    file: str | None = None
    yiaddr: str | None = None
    server: str | None = None
    echoed_client_id: str | None = None
    attempts: int = 0


def normalize_client_id(client_id: str) -> str:
    """Return *client_id* as lowercase colon hex; ValueError if malformed."""
    norm = client_id.strip().lower()
    if not _HEX_RE.match(norm):
        raise ValueError(f"not colon-separated hex: {client_id!r}")
    return norm


def ib_client_id(guid: str) -> str:
    """Return the usual 20-byte IPoIB client id for an 8-byte port *guid*.

    *guid* is colon hex (``00:02:c9:03:00:0a:0b:0c``).
    """
    guid = normalize_client_id(guid)
    if len(guid.split(":")) != 8:
        raise ValueError(f"a port GUID has 8 bytes: {guid!r}")
    return f"{IB_CLIENT_ID_PREFIX}:{guid}"


def _hex_bytes(value: str) -> bytes:
    return bytes.fromhex(value.replace(":", ""))


def build_discover(client_id: bytes, xid: int, src_mac: bytes, *,
                   htype: int = HTYPE_INFINIBAND, hlen: int = 0,
                   chaddr: bytes = b"") -> bytes:
    """Return one Ethernet frame: broadcast DHCPDISCOVER for *client_id*.

    BOOTP ``htype``/``hlen``/``chaddr`` as given (IPoIB: 32, 0, empty),
    broadcast flag, options 53, 61 (*client_id*), 55, 60 (PXE), 93, 255.
    The Ethernet source is *src_mac* (only the veth sees it).
    """
    options = (bytes([53, 1, DHCPDISCOVER])
               + bytes([61, len(client_id)]) + client_id
               + bytes([55, len(PARAMETER_REQUEST_LIST)])
               + PARAMETER_REQUEST_LIST
               + bytes([60, len(PXE_VENDOR_CLASS)]) + PXE_VENDOR_CLASS
               + bytes([93, 2, 0, 0])
               + b"\xff")
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, htype, hlen, 0,
                        xid, 0, 0x8000, b"", b"", b"", b"", chaddr, b"", b"")
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
    return b"\xff" * 6 + src_mac + struct.pack("!H", ETH_P_IP) + ip_hdr + udp


def parse_offer(frame: bytes) -> tuple[int, dict] | None:
    """Parse an Ethernet frame; return ``(xid, info)`` for a DHCPOFFER.

    *info*: ``file``, ``yiaddr``, ``server``, ``htype``, ``hlen`` and
    ``echoed_client_id`` (option 61 in the reply, colon hex, or None).
    """
    reply = parse_reply(frame)
    if reply is None or reply["options"].get(53) != bytes([DHCPOFFER]):
        return None
    opts = reply["options"]
    server = opts.get(54, b"")
    echoed = opts.get(61)
    return reply["xid"], {
        "file": reply["file"],
        "yiaddr": reply["yiaddr"],
        "server": socket.inet_ntoa(server) if len(server) == 4 else None,
        "htype": reply["htype"],
        "hlen": reply["hlen"],
        "echoed_client_id": echoed.hex(":") if echoed else None,
    }


def _iface_mac(iface: str) -> bytes:
    with open(f"/sys/class/net/{iface}/address") as f:
        return _hex_bytes(f.read().strip())


def run_probe(iface: str, client_ids: list[str], timeout: float = 1.0,
              retries: int = 2, *, htype: int = HTYPE_INFINIBAND,
              hlen: int = 0, chaddr: str = "") -> dict[str, dict]:
    """Probe *client_ids* from *iface* (must run inside the client netns).

    Each round sends one DISCOVER per unanswered id, then listens *timeout*
    seconds; at most ``1 + retries`` rounds.  Returns ``{client_id:
    {"offer", "file", "yiaddr", "server", "echoed_client_id", "attempts"}}``.
    """
    ids = list(dict.fromkeys(normalize_client_id(c) for c in client_ids))
    src_mac = _iface_mac(iface)
    raw_chaddr = _hex_bytes(chaddr) if chaddr else b""
    xid_base = random.getrandbits(32)
    frames, by_xid = [], {}
    for i, cid in enumerate(ids):
        xid = (xid_base + i) & 0xFFFFFFFF
        frames.append(build_discover(_hex_bytes(cid), xid, src_mac,
                                     htype=htype, hlen=hlen,
                                     chaddr=raw_chaddr))
        by_xid[xid] = i
    answers: list[dict | None] = [None] * len(ids)
    attempts = [0] * len(ids)
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
            parsed = parse_offer(frame)
            if parsed is None:
                continue
            idx = by_xid.get(parsed[0])
            if idx is not None and answers[idx] is None:
                answers[idx] = parsed[1]

    try:
        pending = list(range(len(ids)))
        for _ in range(1 + retries):
            if not pending:
                break
            for idx in pending:
                sock.send(frames[idx])
                attempts[idx] += 1
                drain(0.002)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and \
                    any(answers[i] is None for i in pending):
                drain(min(0.05, deadline - time.monotonic()))
            pending = [i for i in pending if answers[i] is None]
        drain(0)
    finally:
        sock.close()
    results = {}
    for i, cid in enumerate(ids):
        info = answers[i] or {}
        results[cid] = {
            "offer": bool(info), "attempts": attempts[i],
            "file": info.get("file"), "yiaddr": info.get("yiaddr"),
            "server": info.get("server"),
            "echoed_client_id": info.get("echoed_client_id")}
    return results


def probe(network: DhcpNetwork, client_ids: list[str] | tuple[str, ...], *,
          timeout: float = 1.0, retries: int = 2,
          htype: int = HTYPE_INFINIBAND, hlen: int = 0, chaddr: str = "",
          python: str | None = None) -> dict[str, IbOffer]:
    """Run :func:`run_probe` in *network*'s client namespace.

    Returns ``{client_id: IbOffer}`` (ids normalised).  Raises
    :class:`~.dhcp_probe.ProbeError` if the probe fails or times out.
    """
    norm = list(dict.fromkeys(normalize_client_id(c) for c in client_ids))
    if not norm:
        return {}
    argv = network.client_argv([
        python or sys.executable, "-I", "-m", "pxefilterd_harness.ib_probe",
        "--iface", network.client_iface, "--timeout", str(timeout),
        "--retries", str(retries), "--htype", str(htype),
        "--hlen", str(hlen), "--chaddr", chaddr, "--json",
        *[a for cid in norm for a in ("--client-id", cid)]])
    budget = (1 + retries) * (timeout + 0.05 * len(norm)) + 30
    try:
        res = subprocess.run(argv, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=budget,
                             check=False)
    except subprocess.TimeoutExpired as exc:
        raise ProbeError(f"IB probe timed out after {budget:.0f}s") from exc
    if res.returncode != 0:
        raise ProbeError(f"IB probe exited {res.returncode}: {res.stderr}")
    try:
        data = json.loads(res.stdout)
    except ValueError as exc:
        raise ProbeError(f"IB probe printed no JSON: {res.stdout[:500]!r}") \
            from exc
    return {cid: IbOffer(client_id=cid, **data[cid]) for cid in norm}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 = probe ran)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iface", required=True)
    parser.add_argument("--client-id", action="append", default=[],
                        help="option 61 value, colon hex (repeatable)")
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--htype", type=int, default=HTYPE_INFINIBAND)
    parser.add_argument("--hlen", type=int, default=0)
    parser.add_argument("--chaddr", default="",
                        help="chaddr bytes, colon hex (default: none)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        results = run_probe(args.iface, args.client_id, args.timeout,
                            args.retries, htype=args.htype, hlen=args.hlen,
                            chaddr=args.chaddr)
    except ValueError as exc:
        parser.error(str(exc))
    if args.json:
        json.dump(results, sys.stdout)
        sys.stdout.write("\n")
    else:
        for cid, r in results.items():
            print(cid, "OFFER" if r["offer"] else "silent",
                  r["file"] or "-", r["yiaddr"] or "-")
    return 0


if __name__ == "__main__":
    sys.exit(main())
