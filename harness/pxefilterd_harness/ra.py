"""Answer IPv6 router solicitations with an empty router advertisement.

iPXE configures IPv6 and DHCPv4 side by side and only reports its network
configuration once *both* are settled.  On a link without an IPv6 router
its router solicitations go unanswered and every boot waits for them to
time out (measured: about 18 s instead of about 2 s per boot).  This
responder answers each solicitation at once with a router advertisement
that configures nothing: router lifetime 0 (not a default router), no
prefix, neither the "managed" nor the "other" flag (no DHCPv6).  iPXE then
knows there is no IPv6 here and goes on.

Run it inside the namespace that owns the interface (it exits on SIGTERM)::

    ip netns exec NS python -m pxefilterd_harness.ra --interface br-pxe

It prints one ``ready <interface> <link-local address>`` line on stdout
once it can answer (the interface's link-local address is usable), then
logs one line per advertisement to ``--log`` (or nowhere).  Needs root
(raw ICMPv6 socket).  :class:`RaResponder` starts and stops it by PID.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

from pxefilterd_harness import procs

ROUTER_SOLICITATION = 133
ROUTER_ADVERTISEMENT = 134
ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"
#: setsockopt(IPPROTO_ICMPV6, ICMP6_FILTER, ...) (linux/icmpv6.h)
ICMP6_FILTER = 1
#: /proc/net/if_inet6 flags: DAD not finished yet / DAD failed.
_IFA_F_TENTATIVE, _IFA_F_DADFAILED = 0x40, 0x08


class RaError(RuntimeError):
    """The responder could not be started."""


def advertisement(mac: bytes | None = None) -> bytes:
    """Return an empty ICMPv6 router advertisement (checksum left 0: the
    kernel computes it for raw ICMPv6 sockets).

    Current hop limit 0 (unspecified), no flags, router lifetime 0,
    reachable time and retransmission timer 0 (unspecified); with *mac*
    (6 bytes) a source link-layer address option.
    """
    body = struct.pack("!BBHBBHII", ROUTER_ADVERTISEMENT, 0, 0, 0, 0, 0,
                       0, 0)
    if mac is not None:
        body += struct.pack("!BB6s", 1, 1, mac)
    return body


def solicitation_filter() -> bytes:
    """An ``icmp6_filter`` that passes router solicitations only (a set bit
    blocks that ICMPv6 type)."""
    words = [0xFFFFFFFF] * 8
    words[ROUTER_SOLICITATION >> 5] &= ~(1 << (ROUTER_SOLICITATION & 31))
    return struct.pack("@8I", *words)


def link_local(interface: str) -> str | None:
    """Return *interface*'s usable link-local address (DAD done), if any."""
    try:
        with open("/proc/net/if_inet6") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[5] != interface:
            continue
        raw, scope, flags = fields[0], int(fields[3], 16), int(fields[4], 16)
        if scope != 0x20 or flags & (_IFA_F_TENTATIVE | _IFA_F_DADFAILED):
            continue
        return socket.inet_ntop(socket.AF_INET6, bytes.fromhex(raw))
    return None


def _mac(interface: str) -> bytes | None:
    try:
        with open(f"/sys/class/net/{interface}/address") as f:
            return bytes.fromhex(f.read().strip().replace(":", ""))
    except (OSError, ValueError):
        return None


def open_socket(interface: str) -> socket.socket:
    """A raw ICMPv6 socket on *interface* that receives the solicitations
    sent to all-routers and sends with hop limit 255 (RFC 4861)."""
    index = socket.if_nametoindex(interface)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW,
                         socket.IPPROTO_ICMPV6)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                        interface.encode())
        sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER,
                        solicitation_filter())
        group = socket.inet_pton(socket.AF_INET6, ALL_ROUTERS)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                        group + struct.pack("@I", index))
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
    except BaseException:
        sock.close()
        raise
    return sock


def serve(interface: str, log, ready_timeout: float = 10.0) -> None:
    """Answer solicitations on *interface* until killed."""
    deadline = time.monotonic() + ready_timeout
    address = link_local(interface)
    while address is None:
        if time.monotonic() > deadline:
            raise RaError(f"{interface}: no usable link-local address "
                          f"after {ready_timeout}s")
        time.sleep(0.05)
        address = link_local(interface)
    sock = open_socket(interface)
    packet = advertisement(_mac(interface))
    index = socket.if_nametoindex(interface)
    sys.stdout.write(f"ready {interface} {address}\n")
    sys.stdout.flush()
    # the parent reads only the ready line: from now on log elsewhere
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    while True:
        readable, _, _ = select.select([sock], [], [], 5.0)
        if not readable:
            continue
        data, source = sock.recvfrom(2048)
        if not data or data[0] != ROUTER_SOLICITATION:
            continue
        # Multicast to all nodes: no neighbour discovery needed first.
        sock.sendto(packet, (ALL_NODES, 0, 0, index))
        if log is not None:
            log.write("%.3f RS from %s: RA sent\n" % (time.time(),
                                                       source[0]))
            log.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interface", required=True)
    parser.add_argument("--log", help="append one line per answer here")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log = open(args.log, "a") if args.log else None
    try:
        serve(args.interface, log)
    except (RaError, OSError) as exc:
        sys.stderr.write(f"ra: {exc}\n")
        return 1
    finally:
        if log is not None:
            log.close()
    return 0


class RaResponder:
    """This module run as a child process inside a network namespace.

    :param argv_prefix: how to enter the namespace, e.g.
        ``["ip", "netns", "exec", NS]`` (``ip netns exec`` execs the
        command, so the child's PID is the responder's).
    """

    def __init__(self, argv_prefix: list[str], interface: str,
                 log_path: str | os.PathLike[str] | None = None):
        self.argv = [*argv_prefix, sys.executable, "-m",
                     "pxefilterd_harness.ra", "--interface", interface]
        if log_path is not None:
            self.argv += ["--log", str(log_path)]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.address: str | None = None

    def start(self, timeout: float = 15.0) -> RaResponder:
        """Start it; return once it answers.  Raises :class:`RaError`."""
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, preexec_fn=procs.die_with_parent())
        assert self.proc.stdout is not None
        line = b""
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [],
                                        max(0.0, left))
            chunk = os.read(self.proc.stdout.fileno(), 256) if ready else b""
            if not chunk:
                err = self._kill_and_read_stderr()
                raise RaError(f"RA responder not ready: {err}" if err else
                              f"RA responder not ready after {timeout}s")
            line += chunk
        self.proc.stdout.close()
        fields = line.decode().split()
        self.address = fields[2] if len(fields) > 2 else None
        return self

    def _kill_and_read_stderr(self) -> str:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        err = self.proc.stderr.read() if self.proc.stderr else b""
        self.stop()
        return err.decode(errors="replace").strip()

    def answers(self) -> int:
        """How many solicitations it has answered (0 without a log)."""
        if self.log_path is None:
            return 0
        try:
            with open(self.log_path) as f:
                return sum(1 for _ in f)
        except OSError:
            return 0

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (then SIGKILL) the child by PID; idempotent."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


if __name__ == "__main__":
    sys.exit(main())
