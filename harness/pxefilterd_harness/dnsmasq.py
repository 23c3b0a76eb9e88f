"""A real dnsmasq (Debian ``dnsmasq-base``) serving DHCP in a test namespace.

:class:`DnsmasqInstance` writes a conf file for one instance bound to the
server veth of a :class:`~.netns.DhcpNetwork`, reading a given
``--dhcp-hostsdir``.  It offers the commands as argv lists
(:meth:`~DnsmasqInstance.start_argv`, :meth:`~DnsmasqInstance.stop_argv`,
:meth:`~DnsmasqInstance.reload_argv`) so the daemon under test can be
configured to run them, and runs them itself (:meth:`~DnsmasqInstance.start`,
:meth:`~DnsmasqInstance.stop`) for tests that drive dnsmasq directly.

Facts this relies on (see shared/DESIGN.md):

- ``no-ping``: otherwise dnsmasq pings an address for ~3 s before its first
  offer and ignores other packets meanwhile.
- dnsmasq drops root to ``nobody`` after start-up and reads hostsdir files as
  that user, so the hostsdir and every parent directory must be traversable
  by others and files readable (0644).  The constructor refuses a hostsdir
  that ``nobody`` could not read instead of letting offers silently leak.
- ``dhcp-boot=pxefilterd-test.0`` makes every offer carry that boot file name,
  so a probe can tell this dnsmasq's offers apart.

:class:`HostsDirWriter` writes hostsdir entries the way DESIGN.md says is
safe: temp file in a sibling staging directory, chmod 0644, rename in.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from .netns import RANGE_END, RANGE_START, DhcpNetwork

DNSMASQ = "/usr/sbin/dnsmasq"
#: Boot file name every offer of a test dnsmasq carries.
BOOT_FILE = "pxefilterd-test.0"
#: The wildcard entry's file name and its two contents.
WILDCARD_FILE = "unknown_hosts_filter"
WILDCARD = "*:*:*:*:*:*"


class DnsmasqError(RuntimeError):
    """dnsmasq could not be configured, started or stopped."""


def _check_readable_by_others(path: Path) -> None:
    """Raise ValueError unless an unprivileged user can list *path*.

    Every ancestor needs o+x, *path* itself o+rx.
    """
    path = path.resolve()
    for parent in reversed(path.parents):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            raise ValueError(
                f"{parent} is not traversable by others (chmod o+x): dnsmasq "
                f"reads {path} as 'nobody' after dropping root")
    mode = os.stat(path).st_mode
    if mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
        raise ValueError(f"{path} must be o+rx (e.g. 0755): dnsmasq reads "
                         "it as 'nobody' after dropping root")


def _proc_state(pid: int) -> str | None:
    """Return the one-letter state of *pid*, or ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()[0].decode()


class DnsmasqInstance:
    """One dnsmasq serving DHCP on ``network``'s server veth.

    All files (conf, pid, leases, log) live in *workdir*, created 0755.
    """

    def __init__(self, network: DhcpNetwork, hostsdir: str | os.PathLike[str],
                 workdir: str | os.PathLike[str], *,
                 binary: str = DNSMASQ, lease_time: str = "2m",
                 extra_options: tuple[str, ...] = ()):
        """Write ``dnsmasq.conf`` into *workdir*; start nothing.

        *extra_options* are appended to the conf file as lines (``key=val``).
        Raises ValueError if *hostsdir* is not readable by ``nobody``.
        """
        self.network = network
        self.hostsdir = Path(hostsdir).resolve()
        self.workdir = Path(workdir).resolve()
        self.binary = binary
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        _check_readable_by_others(self.hostsdir)
        self.conf_path = self.workdir / "dnsmasq.conf"
        self.pid_path = self.workdir / "dnsmasq.pid"
        self.lease_path = self.workdir / "dnsmasq.leases"
        self.log_path = self.workdir / "dnsmasq.log"
        lines = [
            f"interface={network.server_iface}",
            "bind-interfaces",
            "except-interface=lo",
            "port=0",
            "no-resolv",
            "no-hosts",
            f"dhcp-range={RANGE_START},{RANGE_END},255.255.255.0,{lease_time}",
            f"dhcp-boot={BOOT_FILE}",
            "no-ping",
            f"dhcp-hostsdir={self.hostsdir}",
            f"pid-file={self.pid_path}",
            f"dhcp-leasefile={self.lease_path}",
            f"log-facility={self.log_path}",
            "log-dhcp",
            *extra_options,
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    # ------------------------------------------------------------ argv

    def start_argv(self) -> list[str]:
        """argv that starts dnsmasq daemonized in the server namespace.

        dnsmasq forks; the command returns (exit 0) once the daemon is set up,
        or non-zero with the reason on stderr.
        """
        return self.network.server_argv(
            [self.binary, f"--conf-file={self.conf_path}"])

    def foreground_argv(self) -> list[str]:
        """argv that runs dnsmasq in the foreground (for a supervisor)."""
        return self.start_argv() + ["--keep-in-foreground"]

    def stop_argv(self) -> list[str]:
        """argv that sends SIGTERM to the pid in the pid file, if dnsmasq.

        Exits 1 (harmless) when no such process exists.
        """
        return ["pkill", "--signal", "TERM", "--pidfile", str(self.pid_path),
                "--exact", "dnsmasq"]

    def reload_argv(self) -> list[str]:
        """argv that sends SIGHUP (drop all hostsdir records, re-read dir)."""
        return ["pkill", "--signal", "HUP", "--pidfile", str(self.pid_path),
                "--exact", "dnsmasq"]

    # ------------------------------------------------------------ state

    def pid(self) -> int | None:
        """PID from the pid file if it is a live dnsmasq using our conf.

        Returns ``None`` for a missing/stale pid file, a zombie, or a PID
        reused by some other process.
        """
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        state = _proc_state(pid)
        if state is None or state in "ZX":
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return None
        if comm != "dnsmasq":
            return None
        if f"--conf-file={self.conf_path}".encode() not in cmdline:
            return None
        return pid

    def is_running(self) -> bool:
        """True if our dnsmasq is alive (see :meth:`pid`)."""
        return self.pid() is not None

    def log_text(self) -> str:
        """Return dnsmasq's whole log file ('' if none yet)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 5.0,
                     count: int = 1) -> bool:
        """Wait until *text* occurs *count* times in the log; return whether.

        dnsmasq logs ``read <path>`` each time it (re)reads a hostsdir file,
        which is how a test knows an inotify-driven change has landed.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.log_text().count(text) >= count:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def leases(self) -> str:
        """Return the lease file's content ('' if none)."""
        try:
            return self.lease_path.read_text()
        except OSError:
            return ""

    # ------------------------------------------------------------ control

    def start(self, timeout: float = 15.0) -> int:
        """Run :meth:`start_argv`; return the daemon's PID once it runs.

        Raises :class:`DnsmasqError` (with stderr and log tail) if one of ours
        is already running, the command fails or times out, or no live
        dnsmasq is found via the pid file within *timeout* seconds.
        """
        if self.is_running():
            raise DnsmasqError(f"dnsmasq already running, pid {self.pid()}")
        self.pid_path.unlink(missing_ok=True)
        deadline = time.monotonic() + timeout
        try:
            res = subprocess.run(self.start_argv(), stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True,
                                 timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise DnsmasqError(f"dnsmasq start timed out after {timeout}s") \
                from exc
        if res.returncode != 0:
            raise DnsmasqError(
                f"dnsmasq exited {res.returncode}: {res.stderr.strip()}\n"
                f"{self.log_text()[-2000:]}")
        while True:
            pid = self.pid()
            if pid is not None:
                return pid
            if time.monotonic() > deadline:
                raise DnsmasqError("dnsmasq started but no live pid in "
                                   f"{self.pid_path}:\n{self.log_text()}")
            time.sleep(0.02)

    def reload(self) -> None:
        """Send SIGHUP by PID; raises :class:`DnsmasqError` if not running."""
        pid = self.pid()
        if pid is None:
            raise DnsmasqError("dnsmasq is not running")
        os.kill(pid, signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop dnsmasq and make sure it is gone.  Idempotent.

        Runs :meth:`stop_argv` (SIGTERM), waits up to *timeout* seconds for
        the process to disappear, then SIGKILLs that PID.  Returns True if a
        process was stopped.  Raises :class:`DnsmasqError` if it survives
        SIGKILL for 5 more seconds.
        """
        pid = self.pid()
        if pid is None:
            return False
        try:
            subprocess.run(self.stop_argv(), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            pass
        if self.wait_gone(pid, timeout):
            return True
        if self.pid() == pid:
            os.kill(pid, signal.SIGKILL)
        if not self.wait_gone(pid, 5.0):
            raise DnsmasqError(f"dnsmasq pid {pid} survives SIGKILL")
        return True

    @staticmethod
    def wait_gone(pid: int, timeout: float) -> bool:
        """Wait until *pid* is gone or a zombie; return whether it is.

        For a daemonized dnsmasq (not our child) this is the only way to
        know it has exited.
        """
        deadline = time.monotonic() + timeout
        while True:
            state = _proc_state(pid)
            if state is None or state in "ZX":
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def __enter__(self) -> DnsmasqInstance:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class HostsDirWriter:
    """Writes dnsmasq hostsdir entries atomically, as DESIGN.md requires.

    Each write creates the content in *staging* (a sibling directory on the
    same filesystem, created 0755 if missing), chmods it 0644, and renames it
    into *hostsdir*: dnsmasq sees exactly one IN_MOVED_TO per change and never
    a partial file.  MACs must already be lowercase colon form.
    """

    def __init__(self, hostsdir: str | os.PathLike[str],
                 staging: str | os.PathLike[str] | None = None):
        """Create *hostsdir* (and *staging*, default ``<hostsdir>.staging``)
        with mode 0755 if they do not exist."""
        self.path = Path(hostsdir)
        self.staging = Path(staging) if staging else \
            self.path.with_name(self.path.name + ".staging")
        for d in (self.path, self.staging):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o755)
        if os.stat(self.path).st_dev != os.stat(self.staging).st_dev:
            raise ValueError("staging must be on the hostsdir's filesystem")

    def write(self, name: str, content: str) -> Path:
        """Atomically set file *name* in the hostsdir to *content*."""
        fd, tmp = tempfile.mkstemp(dir=self.staging, prefix=".w-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(content)
            os.chmod(tmp, 0o644)
            target = self.path / name
            os.rename(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def deny(self, mac: str) -> Path:
        """Write ``<mac>,ignore`` into file ``<mac>``."""
        return self.write(mac, f"{mac},ignore\n")

    def allow(self, mac: str) -> Path:
        """Write ``<mac>`` into file ``<mac>``."""
        return self.write(mac, f"{mac}\n")

    def unknown(self, deny: bool) -> Path:
        """Write the wildcard file: deny or allow MACs no file names."""
        return self.write(WILDCARD_FILE,
                          f"{WILDCARD},ignore\n" if deny else f"{WILDCARD}\n")

    def listing(self) -> dict[str, str]:
        """Return ``{file name: content}`` of every file in the hostsdir."""
        return {p.name: p.read_text() for p in sorted(self.path.iterdir())
                if p.is_file()}
