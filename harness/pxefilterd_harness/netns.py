"""A throw-away two-namespace DHCP network: server netns <-veth-> client netns.

:class:`DhcpNetwork` creates::

    netns <prefix>-srv-<pid>-<n>            netns <prefix>-cli-<pid>-<n>
      lo up                                   lo up
      veth-srv 198.51.100.1/24 up  <----->    veth-cli up, no address

The veth pair is created inside the server namespace with its peer placed
directly in the client namespace, so nothing ever appears in the host's own
namespace.  Only the documentation range 198.51.100.0/24 is used.
:meth:`DhcpNetwork.close` removes both namespaces (idempotent), after killing
by PID any process still running inside them -- processes there can only
have been started by the harness or by the code under test it drives.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time

SERVER_ADDRESS = "198.51.100.1"
PREFIX_LEN = 24
#: First and last address dnsmasq hands out (see :mod:`.dnsmasq`).
RANGE_START, RANGE_END = "198.51.100.100", "198.51.100.250"

_counter = itertools.count()


class NetnsError(RuntimeError):
    """A namespace command failed or timed out (message includes stderr)."""


def run(argv: list[str], timeout: float = 10.0,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run *argv* (no shell) with a timeout, capturing text output.

    Raises :class:`NetnsError` on timeout, or on a non-zero exit if *check*.
    """
    try:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"{argv} timed out after {timeout}s") from exc
    if check and res.returncode != 0:
        raise NetnsError(f"{argv} exited {res.returncode}: "
                         f"{res.stderr.strip()}")
    return res


class DhcpNetwork:
    """Two fresh network namespaces joined by a veth pair.

    Construction raises :class:`NetnsError` if any step fails, after removing
    whatever it had created.  Use as a context manager or call :meth:`close`.
    """

    server_iface = "veth-srv"
    client_iface = "veth-cli"
    server_address = SERVER_ADDRESS
    prefix_len = PREFIX_LEN

    def __init__(self, prefix: str = "pxf", *, timeout: float = 10.0):
        """Create the namespaces and link; names are unique per process."""
        n = next(_counter)
        self.timeout = timeout
        self.server_ns = f"{prefix}-srv-{os.getpid()}-{n}"
        self.client_ns = f"{prefix}-cli-{os.getpid()}-{n}"
        self._created: list[str] = []
        try:
            for ns in (self.server_ns, self.client_ns):
                run(["ip", "netns", "add", ns], timeout)
                self._created.append(ns)
            srv, cli = self.server_ns, self.client_ns
            run(["ip", "-n", srv, "link", "add", self.server_iface,
                 "type", "veth", "peer", "name", self.client_iface,
                 "netns", cli], timeout)
            run(["ip", "-n", srv, "addr", "add",
                 f"{SERVER_ADDRESS}/{PREFIX_LEN}", "dev", self.server_iface],
                timeout)
            for ns, iface in ((srv, self.server_iface),
                              (cli, self.client_iface)):
                run(["ip", "-n", ns, "link", "set", "lo", "up"], timeout)
                run(["ip", "-n", ns, "link", "set", iface, "up"], timeout)
            self._wait_up()
        except BaseException:
            self.close()
            raise

    def _wait_up(self) -> None:
        """Wait until both veth ends report operstate UP (carrier)."""
        deadline = time.monotonic() + self.timeout
        pending = {(self.server_ns, self.server_iface),
                   (self.client_ns, self.client_iface)}
        while pending:
            for ns, iface in list(pending):
                out = run(["ip", "-n", ns, "-o", "link", "show", iface],
                          self.timeout).stdout
                if "state UP" in out:
                    pending.discard((ns, iface))
            if pending and time.monotonic() > deadline:
                raise NetnsError(f"veth not up after {self.timeout}s: "
                                 f"{sorted(pending)}")
            if pending:
                time.sleep(0.05)

    # ------------------------------------------------------------ helpers

    def server_argv(self, argv: list[str]) -> list[str]:
        """Return *argv* prefixed to run inside the server namespace."""
        return ["ip", "netns", "exec", self.server_ns, *argv]

    def client_argv(self, argv: list[str]) -> list[str]:
        """Return *argv* prefixed to run inside the client namespace."""
        return ["ip", "netns", "exec", self.client_ns, *argv]

    def pids(self) -> dict[str, list[int]]:
        """Return ``{namespace: [pid, ...]}`` of processes inside each one."""
        result = {}
        for ns in self._created:
            out = run(["ip", "netns", "pids", ns], self.timeout,
                      check=False).stdout
            result[ns] = [int(p) for p in out.split()]
        return result

    def udp_rcvbuf_errors(self) -> int:
        """Return the server namespace's UDP ``RcvbufErrors`` counter.

        Non-zero means dnsmasq's socket overflowed: some DISCOVERs were
        dropped before dnsmasq saw them (a probe result may then be wrong).
        """
        out = run(self.server_argv(["cat", "/proc/net/snmp"]),
                  self.timeout).stdout
        lines = [ln.split() for ln in out.splitlines()
                 if ln.startswith("Udp:")]
        header, values = lines[0], lines[1]
        return int(values[header.index("RcvbufErrors")])

    # ------------------------------------------------------------ cleanup

    def close(self) -> list[int]:
        """Remove both namespaces; idempotent.  Returns PIDs it had to kill.

        A process left inside a namespace would keep it (and the veth) alive
        after ``ip netns del``; such processes are SIGKILLed by PID first.
        Errors deleting a namespace are raised as :class:`NetnsError` after
        trying all of them.
        """
        killed: list[int] = []
        if not self._created:
            return killed
        for pids in self.pids().values():
            for pid in pids:
                if pid == os.getpid():
                    continue
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
        errors = []
        for ns in list(self._created):
            res = run(["ip", "netns", "del", ns], self.timeout, check=False)
            if res.returncode == 0 or "No such file" in res.stderr:
                self._created.remove(ns)
            else:
                errors.append(f"{ns}: {res.stderr.strip()}")
        if errors:
            raise NetnsError("could not delete " + "; ".join(errors))
        return killed

    def __enter__(self) -> DhcpNetwork:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
