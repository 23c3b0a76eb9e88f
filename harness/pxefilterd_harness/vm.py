"""Real PXE firmware as DHCP clients: qemu VMs on a bridge in the server
namespace.

The raw probes of :mod:`.dhcp_probe` ask dnsmasq the way firmware would;
this module has the firmware ask itself: SeaBIOS with the iPXE option ROM
of the NIC ("bios"), or UEFI (OVMF) with the iPXE EFI ROM ("uefi") or with
EDK2's own PXE client (``rom=False``).  The layout, :class:`VmNetwork`::

    server netns                                      client netns
      br-pxe  198.51.100.1/24, link-local (RA responder)
        +-- veth-srv  <---------------------------->   veth-cli (probes)
        +-- tap0  <- qemu (virtio-net-pci, chosen MAC)
        +-- tap1  <- qemu ...

:class:`VmNetwork` is a :class:`~.netns.DhcpNetwork` whose ``server_iface``
is the bridge, so a :class:`~.dnsmasq.DnsmasqInstance` built on it binds to
the bridge and serves both the VMs and the raw probes of the client
namespace.  The bridge forwards at once (STP off, forward delay 0).  An
:class:`~.ra.RaResponder` answers iPXE's IPv6 router solicitations with an
empty advertisement, without which iPXE waits ~16 s more per boot.

dnsmasq needs the boot options of :func:`boot_options` (TFTP root made by
:func:`prepare_tftp_root`: an iPXE script that prints :data:`MARKER` with
the NIC's MAC and reboots; with ``-no-reboot`` qemu then exits).

A :class:`Vm` reaches one of these verdicts (:class:`Verdict`):

- ``booted``: the marker with its MAC is on its serial console: DHCP, TFTP
  and the script worked (measured on an idle machine: 2.5 s after qemu
  starts for BIOS, ~8 s for UEFI with the iPXE ROM, ~17 s for EDK2's PXE
  client chain-loading ipxe.efi);
- ``denied``: dnsmasq's log shows :data:`DENIED_AFTER` of its DISCOVERs
  ``ignored`` and no offer to it (iPXE asks at about +0, +1, +3, +7 s:
  denied 5.4 s after qemu starts for BIOS, ~9-12 s for UEFI; EDK2's own
  client at +0, +4, +14 s: ~22 s);
- ``exited`` (qemu stopped without the marker) or ``timeout``.

qemu runs with TCG (``/dev/kvm`` may exist and still fail for nested
guests), is started with a lifetime limit, killed by PID and its tap
removed; :meth:`VmNetwork.close` also kills every VM still running.
Cost: ~50 MiB and ~0.4 s CPU per BIOS boot; a waiting iPXE spins a core.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

from . import procs
from .dnsmasq import DnsmasqInstance
from .netns import DhcpNetwork, NetnsError, run
from .preflight import dhcp_problem, find_tool
from .ra import RaResponder

QEMU = "qemu-system-x86_64"
#: Debian packages providing what a VM boot needs.
PACKAGES = ("qemu-system-x86", "seabios", "ipxe-qemu", "ovmf")
#: Candidate paths, first found wins.
SEABIOS = ("/usr/share/seabios/bios-256k.bin",
           "/usr/share/qemu/bios-256k.bin")
#: iPXE ROM for virtio-net with both the BIOS and the EFI driver.
VIRTIO_ROM = ("/usr/lib/ipxe/qemu/efi-virtio.rom",
              "/usr/share/qemu/efi-virtio.rom")
OVMF_CODE = ("/usr/share/OVMF/OVMF_CODE_4M.fd",
             "/usr/share/qemu/OVMF_CODE_4M.fd")
OVMF_VARS = ("/usr/share/OVMF/OVMF_VARS_4M.fd",
             "/usr/share/qemu/OVMF_VARS_4M.fd")
#: iPXE binaries that non-iPXE firmware chain-loads (Debian ``ipxe``);
#: optional: only EDK2's own PXE client (``rom=False``) needs ipxe.efi.
CHAINLOAD = {"undionly.kpxe": ("/usr/lib/ipxe/undionly.kpxe",),
             "ipxe.efi": ("/usr/lib/ipxe/ipxe.efi",)}

FIRMWARES = ("bios", "uefi")
BRIDGE = "br-pxe"
#: Fixed (locally administered) bridge MAC: a bridge otherwise takes the
#: lowest port MAC, which changes as taps come and go.
BRIDGE_MAC = "02:00:c6:33:64:01"

#: Printed by the boot script: ``<MARKER> mac=<mac> ip=<ip> platform=<p>``.
MARKER = "PXEFILTERD-BOOTED"
SCRIPT_NAME = "boot.ipxe"
#: The last bytes before ``reboot`` may never leave the emulated UART (qemu
#: exits at once): a second line protects the marker line.
BOOT_SCRIPT = f"""#!ipxe
echo {MARKER} mac=${{net0/mac}} ip=${{net0/ip}} platform=${{platform}} end
echo pxefilterd test script done, rebooting (qemu -no-reboot exits)
reboot
"""
#: Ignored DISCOVERs (and no offer) that make a "denied" verdict.
DENIED_AFTER = 3
#: Seconds a boot is waited for by default, from qemu's start: the slowest
#: verdicts above (UEFI: EDK2's PXE denied, ~22 s) with room for a loaded
#: machine.
BOOT_TIMEOUT = {"bios": 30.0, "uefi": 45.0}

_MARKER_RE = re.compile(re.escape(MARKER) +
                        r" mac=([0-9a-f:]{17}) ip=(\S*) platform=(\S*) end")
_counter = itertools.count()


class VmError(RuntimeError):
    """A VM could not be set up or started."""


def _first(paths: Iterable[str]) -> str | None:
    return next((p for p in paths if os.path.exists(p)), None)


def vm_problem(firmware: str = "bios", rom: bool = True) -> str | None:
    """Why a *firmware* VM cannot boot here, or ``None``.

    Checks what :func:`~.preflight.dhcp_problem` checks, ``/dev/net/tun``,
    qemu, SeaBIOS, the iPXE ROM and, for ``uefi``, OVMF; without *rom*
    (UEFI only: SeaBIOS has no network boot of its own) the ipxe.efi that
    EDK2's PXE client chain-loads.
    """
    problem = dhcp_problem()
    if problem:
        return problem
    hint = "install the Debian packages " + " ".join(PACKAGES)
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun missing (tap devices for the VMs)"
    if find_tool(QEMU) is None:
        return f"{QEMU} not found ({hint})"
    needed = {"SeaBIOS": SEABIOS, "the iPXE virtio ROM": VIRTIO_ROM}
    if firmware == "uefi":
        needed.update({"OVMF code": OVMF_CODE, "OVMF variables": OVMF_VARS})
    elif firmware != "bios":
        return f"unknown firmware {firmware!r} (one of {FIRMWARES})"
    if not rom:
        if firmware == "bios":
            return "SeaBIOS cannot network-boot without the iPXE ROM"
        needed["ipxe.efi (Debian package ipxe)"] = CHAINLOAD["ipxe.efi"]
    for what, paths in needed.items():
        if _first(paths) is None:
            return f"{what} not found in {', '.join(paths)} ({hint})"
    return None


# -- dnsmasq --------------------------------------------------------------

def prepare_tftp_root(path: str | os.PathLike[str]) -> Path:
    """Create a TFTP root *path* (0755) with :data:`BOOT_SCRIPT` and, when
    installed, the iPXE binaries of :data:`CHAINLOAD`; return it.

    dnsmasq serves TFTP as ``nobody``: files are 0644.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    script = root / SCRIPT_NAME
    script.write_text(BOOT_SCRIPT)
    os.chmod(script, 0o644)
    for name, sources in CHAINLOAD.items():
        source = _first(sources)
        if source:
            shutil.copyfile(source, root / name)
            os.chmod(root / name, 0o644)
    return root


def boot_options(tftp_root: str | os.PathLike[str],
                 script: str = SCRIPT_NAME) -> tuple[str, ...]:
    """dnsmasq conf lines that boot real machines into *script*.

    For ``DnsmasqInstance(..., extra_options=boot_options(root))``.  iPXE
    (it sends option 175) gets the script by TFTP; other firmware gets an
    iPXE binary to chain-load: ``ipxe.efi`` for x86-64 UEFI (client arch 7
    or 9), ``undionly.kpxe`` for BIOS.  Tagged ``dhcp-boot`` lines take
    precedence over the untagged test boot file of :class:`DnsmasqInstance`.
    Option 175 with iPXE's setting 176 ("no-pxedhcp") = 1 spares iPXE its
    wait for a ProxyDHCP offer.
    """
    return (
        "enable-tftp",
        f"tftp-root={Path(tftp_root).resolve()}",
        "dhcp-match=set:ipxe,175",
        "dhcp-match=set:efi64,option:client-arch,7",
        "dhcp-match=set:efi64,option:client-arch,9",
        "dhcp-option=tag:ipxe,175,b0:01:01",
        f"dhcp-boot=tag:ipxe,{script}",
        "dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi",
        "dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe",
    )


# -- network --------------------------------------------------------------

class VmNetwork(DhcpNetwork):
    """A :class:`~.netns.DhcpNetwork` with the server veth on a bridge.

    The bridge :data:`BRIDGE` carries 198.51.100.1/24 and is the
    ``server_iface`` (dnsmasq binds to it); VMs get taps on it
    (:meth:`add_tap`).  An RA responder runs on it until :meth:`close`.

    :param workdir: where the responder logs (default: a temporary
        directory removed by :meth:`close`).
    """

    server_iface = BRIDGE

    def __init__(self, prefix: str = "pxv", *,
                 workdir: str | os.PathLike[str] | None = None,
                 timeout: float = 10.0):
        self.veth_iface = DhcpNetwork.server_iface
        self.vms: list[Vm] = []
        self.ra: RaResponder | None = None
        self._taps = itertools.count()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="pxf-vmnet-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        # DhcpNetwork.__init__ brings up (and waits for) ``server_iface``:
        # let it do so for the veth, then move the address to the bridge.
        self.server_iface = self.veth_iface
        super().__init__(prefix, timeout=timeout)
        try:
            self.server_iface = BRIDGE
            self._make_bridge()
            self.ra = RaResponder(["ip", "netns", "exec", self.server_ns],
                                  BRIDGE, self.workdir / "ra.log")
            self.ra.start(timeout=max(timeout, 15.0))
        except BaseException:
            self.close()
            raise

    def _make_bridge(self) -> None:
        srv, t = self.server_ns, self.timeout
        address = f"{self.server_address}/{self.prefix_len}"
        # usable link-local at once (the RA's source): no DAD on the bridge
        run(["ip", "netns", "exec", srv, "sysctl", "-q", "-w",
             "net.ipv6.conf.default.accept_dad=0",
             "net.ipv6.conf.default.disable_ipv6=0"], t)
        run(["ip", "-n", srv, "link", "add", BRIDGE, "address", BRIDGE_MAC,
             "type", "bridge", "stp_state", "0", "forward_delay", "0",
             "mcast_snooping", "0"], t)
        run(["ip", "-n", srv, "addr", "del", address, "dev",
             self.veth_iface], t)
        run(["ip", "-n", srv, "link", "set", self.veth_iface, "master",
             BRIDGE], t)
        run(["ip", "-n", srv, "addr", "add", address, "dev", BRIDGE], t)
        run(["ip", "-n", srv, "link", "set", BRIDGE, "up"], t)
        deadline = time.monotonic() + t
        while "state UP" not in run(["ip", "-n", srv, "-o", "link", "show",
                                     BRIDGE], t).stdout:
            if time.monotonic() > deadline:
                raise NetnsError(f"{BRIDGE} not up after {t}s")
            time.sleep(0.05)

    def add_tap(self) -> str:
        """Create a tap on the bridge (up); return its name."""
        name = f"tap{next(self._taps)}"
        srv, t = self.server_ns, self.timeout
        run(["ip", "-n", srv, "tuntap", "add", "dev", name, "mode", "tap"], t)
        try:
            run(["ip", "-n", srv, "link", "set", name, "master", BRIDGE], t)
            run(["ip", "-n", srv, "link", "set", name, "up"], t)
        except BaseException:
            self.del_tap(name)
            raise
        return name

    def del_tap(self, name: str) -> None:
        """Remove tap *name* (no error if it is gone)."""
        run(["ip", "-n", self.server_ns, "link", "del", name], self.timeout,
            check=False)

    def ra_answers(self) -> int:
        """Router solicitations answered so far."""
        return self.ra.answers() if self.ra else 0

    def close(self) -> list[int]:
        """Kill the VMs and the RA responder by PID, then remove the
        namespaces (see :meth:`DhcpNetwork.close`); idempotent."""
        try:
            for vm in list(getattr(self, "vms", ())):
                vm.close()
            if getattr(self, "ra", None) is not None:
                self.ra.stop()
        finally:
            killed = super().close()
            if getattr(self, "_own_workdir", False):
                shutil.rmtree(self.workdir, ignore_errors=True)
        return killed


# -- VMs ------------------------------------------------------------------

@dataclasses.dataclass
class Verdict:
    """What became of one VM boot.  Times are seconds after qemu started,
    as seen by polling (about 20 ms resolution)."""

    kind: str                    # booted | denied | exited | timeout
    mac: str
    firmware: str
    seconds: float               # when the verdict was reached
    discovers: int = 0           # DHCPDISCOVERs from this MAC in the log
    ignored: int = 0             # ... of which dnsmasq ignored
    offers: int = 0              # DHCPOFFERs to this MAC
    first_discover: float | None = None
    first_offer: float | None = None
    ip: str | None = None        # from the marker
    platform: str | None = None  # iPXE's ${platform}: pcbios or efi
    serial_tail: str = ""

    @property
    def booted(self) -> bool:
        return self.kind == "booted"

    @property
    def denied(self) -> bool:
        return self.kind == "denied"

    def describe(self) -> str:
        """One line for humans."""
        if self.booted:
            return ("booted in %.2f s (iPXE %s, %s; %d DISCOVER(s), %d "
                    "ignored, first offer at %s)"
                    % (self.seconds, self.platform, self.ip, self.discovers,
                       self.ignored, _secs(self.first_offer)))
        if self.denied:
            return ("denied: %d DISCOVERs ignored, no offer (verdict after "
                    "%.2f s)" % (self.ignored, self.seconds))
        return ("%s after %.1f s: %d DISCOVER(s), %d ignored, %d offer(s); "
                "serial console ends: %s"
                % (self.kind, self.seconds, self.discovers, self.ignored,
                   self.offers, self.serial_tail[-300:].strip()))


def _secs(value: float | None) -> str:
    return "-" if value is None else "%.2f s" % value


class _Tail:
    """Reads what a file gained since the last call (whole lines only)."""

    def __init__(self, path: Path, offset: int = 0):
        self.path = path
        self.offset = offset
        self._rest = b""

    def _read(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return b""
        self.offset += len(data)
        return data

    def read_raw(self) -> str:
        """Everything new, partial lines included."""
        return self._read().decode(errors="replace")

    def read(self) -> list[str]:
        data = self._rest + self._read()
        cut = data.rfind(b"\n") + 1
        self._rest = data[cut:]
        return data[:cut].decode(errors="replace").splitlines()


class Vm:
    """One qemu VM network-booting with MAC *mac* on *network*.

    :param dnsmasq: the instance serving *network* (its log, with
        ``log-dhcp``, gives the denied verdict).
    :param workdir: for the serial log, qemu's output and UEFI variables.
    :param firmware: ``bios`` (SeaBIOS + iPXE ROM, i440fx) or ``uefi``
        (OVMF, q35).
    :param rom: load the iPXE ROM; ``False`` leaves network boot to the
        firmware (UEFI: EDK2's own PXE client, which then needs ipxe.efi in
        the TFTP root).
    :param max_seconds: qemu is killed this long after its start at the
        latest (by :meth:`poll`/:meth:`wait`/:meth:`close`).
    """

    def __init__(self, network: VmNetwork, dnsmasq: DnsmasqInstance,
                 mac: str, workdir: str | os.PathLike[str], *,
                 firmware: str = "bios", rom: bool = True,
                 memory_mb: int | None = None, accel: str = "tcg",
                 max_seconds: float = 120.0):
        if firmware not in FIRMWARES:
            raise ValueError(f"firmware must be one of {FIRMWARES}")
        self.network = network
        self.dnsmasq = dnsmasq
        self.mac = mac.lower()
        self.firmware = firmware
        self.rom = rom
        self.memory_mb = memory_mb or (128 if firmware == "bios" else 256)
        self.accel = accel
        self.max_seconds = max_seconds
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.serial_path = self.workdir / "serial.log"
        self.qemu_log_path = self.workdir / "qemu.log"
        self.tap: str | None = None
        self.proc: subprocess.Popen | None = None
        self.started: float | None = None
        self.verdict: Verdict | None = None
        mac_re = re.escape(self.mac)
        self._discover_re = re.compile(
            r"DHCPDISCOVER\([^)]*\) (?:\S+ )?" + mac_re + r"( ignored)?\s*$")
        self._offer_re = re.compile(r"DHCPOFFER\([^)]*\) \S+ " + mac_re)
        self._counts = {"discovers": 0, "ignored": 0, "offers": 0}
        self._first: dict[str, float] = {}
        self._serial = ""

    # ------------------------------------------------------------ argv

    def argv(self) -> list[str]:
        """The qemu command line (without the namespace prefix)."""
        if self.tap is None:
            raise VmError("no tap yet: argv() is known after start()")
        qemu = find_tool(QEMU) or QEMU
        machine = "pc" if self.firmware == "bios" else "q35"
        # qemu's default ROM (efi-virtio.rom from its data directories)
        # gets its PCI IDs patched to the device's; an explicit romfile
        # does not, and SeaBIOS then skips it.  "romfile=" means no ROM.
        rom = "" if self.rom else ",romfile="
        argv = [qemu, "-name", f"pxefilterd-{self.mac}",
                "-machine", f"{machine},accel={self.accel}",
                "-m", str(self.memory_mb), "-no-user-config", "-nodefaults",
                "-nographic", "-monitor", "none",
                "-serial", f"file:{self.serial_path}",
                "-no-reboot", "-boot", "n",
                "-netdev", f"tap,id=net0,ifname={self.tap},script=no,"
                           "downscript=no",
                "-device", f"virtio-net-pci,netdev=net0,mac={self.mac},"
                           f"bootindex=1{rom}"]
        if self.firmware == "uefi":
            code, vars_ = _first(OVMF_CODE), self.workdir / "OVMF_VARS.fd"
            argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,"
                               f"file={code}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={vars_}"]
        return argv

    # ------------------------------------------------------------ control

    def start(self) -> Vm:
        """Create the tap and start qemu in the server namespace."""
        if self.proc is not None:
            raise VmError("already started")
        problem = vm_problem(self.firmware, self.rom)
        if problem:
            raise VmError(problem)
        if self.firmware == "uefi":
            shutil.copyfile(_first(OVMF_VARS), self.workdir / "OVMF_VARS.fd")
        self.serial_path.unlink(missing_ok=True)
        self._serial_tail = _Tail(self.serial_path)
        self._log = _Tail(self.dnsmasq.log_path,
                          _size(self.dnsmasq.log_path))
        self.tap = self.network.add_tap()
        try:
            with open(self.qemu_log_path, "ab") as out:
                self.proc = subprocess.Popen(
                    self.network.server_argv(self.argv()),
                    stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=procs.die_with_parent())
        except BaseException:
            self.network.del_tap(self.tap)
            self.tap = None
            raise
        self.started = time.monotonic()
        self.network.vms.append(self)
        return self

    def elapsed(self) -> float:
        return 0.0 if self.started is None else \
            time.monotonic() - self.started

    def poll(self, denied_after: int = DENIED_AFTER) -> Verdict | None:
        """Look at the serial console and dnsmasq's log once; return the
        verdict if there is one (then qemu is killed), else ``None``."""
        if self.verdict is not None:
            return self.verdict
        if self.proc is None:
            raise VmError("not started")
        now = self.elapsed()
        exited = self.proc.poll() is not None
        self._serial += self._serial_tail.read_raw()
        for line in self._log.read():
            m = self._discover_re.search(line)
            if m:
                self._count("discovers", now)
                if m.group(1):
                    self._count("ignored", now)
            elif self._offer_re.search(line):
                self._count("offers", now)
        marker = next((m for m in _MARKER_RE.finditer(self._serial)
                       if m.group(1) == self.mac), None)
        if marker:
            return self._decide("booted", now, ip=marker.group(2),
                                platform=marker.group(3))
        if self._counts["ignored"] >= denied_after and \
                not self._counts["offers"]:
            return self._decide("denied", now)
        if exited:
            # the serial file may have gained the marker meanwhile
            self._serial += self._serial_tail.read_raw()
            marker = next((m for m in _MARKER_RE.finditer(self._serial)
                           if m.group(1) == self.mac), None)
            if marker:
                return self._decide("booted", now, ip=marker.group(2),
                                    platform=marker.group(3))
            return self._decide("exited", now)
        if now > self.max_seconds:
            return self._decide("timeout", now)
        return None

    def _count(self, key: str, now: float) -> None:
        self._counts[key] += 1
        self._first.setdefault(key, now)

    def _decide(self, kind: str, now: float, **extra: object) -> Verdict:
        self.verdict = Verdict(
            kind, self.mac, self.firmware, now,
            first_discover=self._first.get("discovers"),
            first_offer=self._first.get("offers"),
            serial_tail=self._serial[-2000:], **self._counts,
            **extra)  # type: ignore[arg-type]
        self.close()
        return self.verdict

    def wait(self, timeout: float | None = None,
             denied_after: int = DENIED_AFTER) -> Verdict:
        """Poll every 20 ms until a verdict; ``timeout`` (default
        :data:`BOOT_TIMEOUT`) counts from qemu's start."""
        if timeout is None:
            timeout = BOOT_TIMEOUT[self.firmware]
        while True:
            verdict = self.poll(denied_after)
            if verdict is not None:
                return verdict
            if self.elapsed() > timeout:
                return self._decide("timeout", self.elapsed())
            time.sleep(0.02)

    def serial_text(self) -> str:
        try:
            return self.serial_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Kill qemu by PID and remove the tap; idempotent."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.tap is not None:
            self.network.del_tap(self.tap)
            self.tap = None
        if self in self.network.vms:
            self.network.vms.remove(self)

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def run_vms(vms: Iterable[Vm], *, parallel: int = 2,
            timeout: float | None = None) -> dict[str, Verdict]:
    """Start *vms* in order, *parallel* at a time, and poll every running
    one every 20 ms until each has a verdict; return ``{mac: Verdict}``.

    *timeout* (default :data:`BOOT_TIMEOUT` of each VM's firmware) counts
    from each VM's start.  Two VMs at a time do not slow each other down
    on 2 cores (a waiting iPXE spins one).  Every VM is closed on return.
    """
    pending = list(vms)
    running: list[Vm] = []
    verdicts: dict[str, Verdict] = {}
    try:
        while pending or running:
            while pending and len(running) < parallel:
                running.append(pending.pop(0).start())
            for vm in list(running):
                limit = BOOT_TIMEOUT[vm.firmware] if timeout is None \
                    else timeout
                verdict = vm.poll()
                if verdict is None and vm.elapsed() > limit:
                    verdict = vm._decide("timeout", vm.elapsed())
                if verdict is not None:
                    verdicts[vm.mac] = verdict
                    running.remove(vm)
            time.sleep(0.02)
    finally:
        for vm in running + pending:
            vm.close()
    return verdicts


def boot_many(network: VmNetwork, dnsmasq: DnsmasqInstance,
              macs: Iterable[str], workdir: str | os.PathLike[str], *,
              firmware: str = "bios", parallel: int = 2,
              timeout: float | None = None, **vm_kwargs: object
              ) -> dict[str, Verdict]:
    """Boot a VM per MAC (see :func:`run_vms`); return ``{mac: Verdict}``.

    Each VM's files are in ``<workdir>/vm-<mac without colons>``;
    *vm_kwargs* go to :class:`Vm` (``rom``, ``memory_mb``, ...).
    """
    vms = [Vm(network, dnsmasq, mac,
              Path(workdir) / ("vm-" + mac.replace(":", "")),
              firmware=firmware, **vm_kwargs)  # type: ignore[arg-type]
           for mac in macs]
    return run_vms(vms, parallel=parallel, timeout=timeout)


def boot_and_report(network: VmNetwork, dnsmasq: DnsmasqInstance,
                    mac: str, workdir: str | os.PathLike[str], *,
                    firmware: str = "bios", timeout: float | None = None,
                    say: Callable[[str], object] = print) -> Verdict:
    """Boot one VM with *mac*, report one line through *say*, return the
    :class:`Verdict` (``.booted``/``.denied``); for the demo."""
    vm = Vm(network, dnsmasq, mac, workdir, firmware=firmware)
    try:
        vm.start()
        verdict = vm.wait(timeout)
    finally:
        vm.close()
    say("%s VM %s: %s" % (firmware.upper(), mac, verdict.describe()))
    return verdict
