"""A real in-band inspection: qemu VMs boot ironic-python-agent through the
filter and post their inventory to a real ironic.

The layout, on top of :class:`~.vm.VmNetwork`::

    this process's namespace          server namespace (VmNetwork)
      ironic 127.0.0.1:P   <--------   relay 198.51.100.1:6385  <- the agent
                                       boot server 198.51.100.1:8080  <- iPXE
                                       dnsmasq (+ TFTP: inspect.ipxe), br-pxe,
                                       taps, qemu

Both listeners are sockets made *inside* the server namespace by a short
thread that enters it just for the ``socket()`` call
(:func:`socket_in_netns`); the relaying and serving run in this process's
own namespace, which is how the agent in the VM reaches ironic on
127.0.0.1.  Nothing listens outside the test namespace.

- :class:`InspectionSite` puts up the boot server (the cached kernel and
  initramfs of :mod:`.ramdisk`), the ironic relay and a TFTP root with the
  iPXE script (:func:`ipxe_script`); its
  :meth:`~InspectionSite.dnsmasq_options` go to the
  :class:`~.dnsmasq.DnsmasqInstance`.
- :class:`InspectionVm` is a :class:`~.vm.Vm` with the memory the ramdisk
  needs, a sparse disk (the agent looks for a root disk) and optionally
  more NICs; :meth:`~InspectionVm.wait_for` follows its serial console
  through the :data:`MILESTONES` (kernel, init, agent, inventory posted).

Measured here (TCG, 2 busy cores): power-on to the agent's post about
1-2 minutes, most of it the kernel and Python under emulation.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import http.server
import os
import shutil
import socket
import threading
import time
from pathlib import Path

from . import vm
from .daemon import PxefilterdRunner
from .dnsmasq import DnsmasqInstance, HostsDirWriter
from .ironic import IronicService
from .netns import SERVER_ADDRESS
from .ramdisk import Ramdisk

#: Ports in the server namespace (its own port space: no clash possible).
BOOT_PORT = 8080
RELAY_PORT = 6385
#: A port nothing listens on in the server namespace: a callback URL the
#: agent cannot reach.
DEAD_PORT = 9
SCRIPT_NAME = "inspect.ipxe"
#: Seconds each ``ip`` command of the VM network may take (VmNetwork's
#: ``timeout``).  On the shared test machines, ``ip -n NS link set lo up``
#: and ``ip netns del`` right after an earlier namespace with a bridge,
#: taps and a VM went away were seen to take over 10 s (the default) now
#: and then; a slow command is no failure of the flow under test.
NETNS_TIMEOUT = 60.0

#: Kernel command line of the ramdisk besides the agent's URL.  The
#: agent's ``default`` collector only (``logs`` wants journald);
#: one look for the root disk (the VM has one, see InspectionVm).
KERNEL_ARGS = ("console=ttyS0,115200", "net.ifnames=0", "panic=1",
               "mitigations=off", "ipa-inspection-collectors=default",
               "ipa-disk-wait-attempts=2", "ipa-disk-wait-delay=1")

#: Serial-console texts that mark an inspection boot's progress, in order.
MILESTONES = {
    "kernel": "Linux version ",
    "init": "PXF-RAMDISK init",
    "agent-start": "PXF-RAMDISK agent-start",
    "posting": "Posting collected data to",
    "posted": "inspection finished successfully",
    "post-failed": "Failed to perform inspection",
}

_CLONE_NEWNET = 0x40000000


class InspectionError(RuntimeError):
    """The inspection boot did not get where it was waited for."""


def socket_in_netns(netns: str, kind: int = socket.SOCK_STREAM
                    ) -> socket.socket:
    """Return a new IPv4 socket that lives in network namespace *netns*
    (a name under /run/netns).

    Only a helper thread enters the namespace; the socket keeps it for
    its whole life.  Raises ``OSError`` if the namespace cannot be entered.
    """
    result: dict[str, object] = {}

    def enter() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result["sock"] = socket.socket(socket.AF_INET, kind)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=enter, name=f"setns-{netns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["sock"]  # type: ignore[return-value]


def _listener(netns: str, address: str, port: int) -> socket.socket:
    sock = socket_in_netns(netns)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return sock


class TcpRelay:
    """Relay TCP connections from ``listen`` in *netns* to *upstream* in
    this process's namespace, byte for byte.

    :attr:`requests` records ``(monotonic time, first line)`` of each
    connection's first data (an HTTP request line for the agent's post).
    """

    def __init__(self, netns: str, listen: tuple[str, int],
                 upstream: tuple[str, int], *, io_timeout: float = 120.0):
        self.upstream = upstream
        self.io_timeout = io_timeout
        self.requests: list[tuple[float, str]] = []
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = _listener(netns, *listen)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name="inspection-relay")
        self._thread.start()

    def seen(self, text: str) -> list[float]:
        """Times of the connections whose first line contains *text*."""
        with self._lock:
            return [t for t, line in self.requests if text in line]

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._serve, args=(client,),
                             daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream,
                                                timeout=self.io_timeout)
        except OSError:
            client.close()
            return
        client.settimeout(self.io_timeout)
        with self._lock:
            self._sockets += [client, upstream]
        threading.Thread(target=self._pump, args=(upstream, client, False),
                         daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, src: socket.socket, dst: socket.socket,
              record: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                if record:
                    line = data.split(b"\r\n", 1)[0][:200]
                    with self._lock:
                        self.requests.append(
                            (time.monotonic(), line.decode("latin-1")))
                    record = False
                dst.sendall(data)
        except OSError:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop accepting and close every relayed connection; idempotent."""
        self._closed.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                # wakes a pump blocked in recv() on it (close alone would
                # leave the socket, and its namespace, alive until then)
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._sockets = []


class BootServer:
    """HTTP/1.0 server in *netns* serving *files* (``{url name: path}``).

    :attr:`records` holds ``(name, status, started, finished, bytes)`` per
    request, times monotonic.
    """

    def __init__(self, netns: str, files: dict[str, Path], *,
                 address: str = SERVER_ADDRESS, port: int = BOOT_PORT):
        self.address, self.port = address, port
        self.files = {name: Path(path) for name, path in files.items()}
        self.records: list[tuple[str, int, float, float, int]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                started = time.monotonic()
                name = self.path.lstrip("/").split("?", 1)[0]
                path = server.files.get(name)
                if path is None:
                    self.send_error(404)
                    server.records.append((name, 404, started,
                                           time.monotonic(), 0))
                    return
                size = path.stat().st_size
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                sent = 0
                try:
                    with open(path, "rb") as f:
                        while chunk := f.read(1 << 20):
                            self.wfile.write(chunk)
                            sent += len(chunk)
                finally:
                    server.records.append((name, 200, started,
                                           time.monotonic(), sent))

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(
            (address, port), Handler, bind_and_activate=False)
        self._server.daemon_threads = True
        self._server.socket.close()
        self._server.socket = _listener(netns, address, port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            daemon=True, name="inspection-boot-server")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def close(self) -> None:
        """Stop serving; idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()


def ipxe_script(boot_url: str, callback_url: str,
                kernel_args: tuple[str, ...] = KERNEL_ARGS) -> str:
    """The iPXE script that boots the ramdisk from *boot_url* with the
    agent posting to *callback_url*; ``BOOTIF`` names the NIC iPXE booted
    from, as ironic's own PXE templates do."""
    args = " ".join((*kernel_args, "BOOTIF=01-${netX/mac:hexhyp}",
                     f"ipa-inspection-callback-url={callback_url}"))
    return (f"#!ipxe\n"
            f"echo PXEFILTERD-INSPECT mac=${{netX/mac}} ip=${{netX/ip}}\n"
            f"kernel {boot_url}/vmlinuz {args}\n"
            f"initrd {boot_url}/initramfs\n"
            f"boot\n")


class InspectionSite:
    """What the inspection network serves, in *network*'s server namespace:
    the ramdisk over HTTP, ironic through a relay, the iPXE script by TFTP.

    :param ironic_port: ironic's API port on 127.0.0.1 (known before it
        starts: :class:`~.ironic.IronicService` reserves it).
    :param reachable: ``False`` gives the agent a callback URL nothing
        listens on (it never posts).
    """

    def __init__(self, network: vm.VmNetwork, ramdisk: Ramdisk,
                 ironic_port: int, workdir: str | os.PathLike[str], *,
                 reachable: bool = True,
                 kernel_args: tuple[str, ...] = KERNEL_ARGS):
        self.workdir = Path(workdir)
        self.tftp_root = vm.prepare_tftp_root(self.workdir / "tftp")
        self.boot: BootServer | None = None
        self.relay: TcpRelay | None = None
        try:
            self.boot = BootServer(network.server_ns, {
                "vmlinuz": ramdisk.kernel, "initramfs": ramdisk.initramfs})
            self.relay = TcpRelay(network.server_ns,
                                  (SERVER_ADDRESS, RELAY_PORT),
                                  ("127.0.0.1", ironic_port))
        except BaseException:
            self.close()
            raise
        port = RELAY_PORT if reachable else DEAD_PORT
        self.callback_url = (f"http://{SERVER_ADDRESS}:{port}"
                             "/v1/continue_inspection")
        script = self.tftp_root / SCRIPT_NAME
        script.write_text(ipxe_script(self.boot.url, self.callback_url,
                                      kernel_args))
        os.chmod(script, 0o644)

    def dnsmasq_options(self) -> tuple[str, ...]:
        """dnsmasq conf lines that boot iPXE into the inspection script."""
        return vm.boot_options(self.tftp_root, script=SCRIPT_NAME)

    def posts(self) -> list[float]:
        """Monotonic times of the agent's posts that reached the relay."""
        return self.relay.seen("POST /v1/continue_inspection") \
            if self.relay else []

    def close(self) -> None:
        for part in (self.relay, self.boot):
            if part is not None:
                part.close()


class InspectionVm(vm.Vm):
    """A VM that PXE-boots the inspection ramdisk (BIOS, iPXE ROM).

    :param extra_macs: more NICs on the same bridge, without a boot ROM
        (the agent reports them; ironic may add ports for them).
    :param disk_gib: size of a sparse raw disk (0: none); the agent waits
        for a root disk before it inspects.
    """

    def __init__(self, network: vm.VmNetwork, dnsmasq, mac: str,
                 workdir: str | os.PathLike[str], *,
                 extra_macs: tuple[str, ...] = (), memory_mb: int = 1024,
                 disk_gib: int = 8, max_seconds: float = 900.0):
        super().__init__(network, dnsmasq, mac, workdir, firmware="bios",
                         memory_mb=memory_mb, max_seconds=max_seconds)
        self.extra_macs = tuple(m.lower() for m in extra_macs)
        self.extra_taps: list[str] = []
        self.disk_gib = disk_gib
        self.disk_path = self.workdir / "disk.raw"
        #: milestone name -> seconds after qemu started, as first seen
        self.events: dict[str, float] = {}

    def argv(self) -> list[str]:
        argv = super().argv()
        for i, (mac, tap) in enumerate(zip(self.extra_macs,
                                           self.extra_taps), start=1):
            argv += ["-netdev", f"tap,id=net{i},ifname={tap},script=no,"
                                "downscript=no",
                     "-device", f"virtio-net-pci,netdev=net{i},mac={mac},"
                                "romfile="]
        if self.disk_gib:
            argv += ["-drive", f"file={self.disk_path},format=raw,if=virtio"]
        return argv

    def start(self) -> InspectionVm:
        if self.disk_gib:
            with open(self.disk_path, "wb") as f:
                f.truncate(self.disk_gib << 30)
        try:
            for _ in self.extra_macs:
                self.extra_taps.append(self.network.add_tap())
            super().start()
        except BaseException:
            self._del_extra_taps()
            raise
        return self

    def close(self) -> None:
        super().close()
        self._del_extra_taps()
        if self.disk_path.exists():
            self.disk_path.unlink()

    def _del_extra_taps(self) -> None:
        while self.extra_taps:
            self.network.del_tap(self.extra_taps.pop())

    def watch(self) -> vm.Verdict | None:
        """Poll once (see :meth:`Vm.poll`) and note the milestones seen on
        the serial console; return the verdict once qemu is gone."""
        verdict = self.poll()
        now = self.elapsed() if verdict is None else verdict.seconds
        text = self._serial
        for name, marker in MILESTONES.items():
            if name not in self.events and marker in text:
                self.events[name] = now
        if "offer" not in self.events and self._first.get("offers"):
            self.events["offer"] = self._first["offers"]
        return verdict

    def wait_for(self, milestone: str, timeout: float) -> float:
        """Wait until *milestone* (a :data:`MILESTONES` key or ``offer``)
        is seen; return its time (seconds after qemu started).

        Raises :class:`InspectionError` with the serial console's tail if
        the VM ends first or *timeout* (from qemu's start) passes.
        """
        while True:
            verdict = self.watch()
            if milestone in self.events:
                return self.events[milestone]
            if verdict is not None or self.elapsed() > timeout:
                state = verdict.describe() if verdict else \
                    "still running after %.0f s" % self.elapsed()
                raise InspectionError(
                    "no %r: %s; milestones %s; serial console ends:\n%s"
                    % (milestone, state, self.events,
                       self.serial_text()[-3000:]))
            time.sleep(0.1)

    def keep_serial(self, path: str | os.PathLike[str]) -> None:
        """Copy the serial log to *path* (for a failed test's report)."""
        try:
            shutil.copyfile(self.serial_path, path)
        except OSError:
            pass


@dataclasses.dataclass
class Stack:
    """What a real inspection runs on: see :func:`stack`."""

    net: vm.VmNetwork
    ironic: IronicService
    site: InspectionSite
    dnsmasq: DnsmasqInstance
    runner: PxefilterdRunner


@contextlib.contextmanager
def stack(workdir: Path, disk: Ramdisk, ready_timeout: float = 120.0):
    """A real ironic (unmanaged inspection), the boot site of ``disk`` and
    the relay to ironic, dnsmasq and a ready pxefilterd, on a VM network
    under ``workdir``; everything is stopped and closed on the way out."""
    net = vm.VmNetwork(workdir=workdir / 'net', timeout=NETNS_TIMEOUT)
    ironic = site = dm = runner = None
    try:
        ironic = IronicService(workdir / 'ironic')
        ironic.start()
        site = InspectionSite(net, disk, ironic.port, workdir / 'site')
        hostsdir = HostsDirWriter(workdir / 'hostsdir')
        dm = DnsmasqInstance(net, hostsdir.path, workdir / 'dnsmasq',
                             extra_options=site.dnsmasq_options())
        runner = PxefilterdRunner(workdir / 'pxefilterd', ironic.url, dm)
        runner.start()
        runner.wait_ready(timeout=ready_timeout)
        yield Stack(net, ironic, site, dm, runner)
    finally:
        for part in (runner, site, ironic):
            if part is not None:
                part.close()
        if dm is not None:
            dm.stop()
        net.close()


def state_changed_at(ironic, node: str) -> float:
    """Wall-clock time (epoch seconds) of the node's last provision-state
    change, from ironic's ``provision_updated_at``."""
    stamp = ironic.node(node)["provision_updated_at"]
    when = datetime.datetime.fromisoformat(stamp)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def wait_denied(hostsdir: str | os.PathLike[str], mac: str,
                timeout: float) -> float:
    """Wait until the hostsdir entry for *mac* says ``ignore``; return when
    it was written (the file's mtime, epoch seconds: entries are renamed
    into place, so the mtime is the write).

    Raises :class:`InspectionError` with the entry's content after
    *timeout* seconds.
    """
    entry = Path(hostsdir) / mac
    deadline = time.monotonic() + timeout
    while True:
        try:
            if entry.read_text() == mac + ",ignore\n":
                return os.stat(entry).st_mtime
        except OSError:
            pass
        if time.monotonic() > deadline:
            try:
                content = repr(entry.read_text())
            except OSError as exc:
                content = str(exc)
            raise InspectionError(f"{mac} not denied after {timeout:.0f} s "
                                  f"(entry: {content})")
        time.sleep(0.05)
