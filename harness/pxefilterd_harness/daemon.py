"""Run the real ``pxefilterd`` against a real ironic and a real dnsmasq.

:class:`PxefilterdRunner` writes a pxefilterd configuration whose dnsmasq
start/stop/reload commands go through the real ``pxefilterd-rootwrap`` with
a rootwrap configuration and filters made for this one dnsmasq instance
(nothing else is allowed), starts the daemon as a child process with its
log in a file, and stops or kills it by PID.  Used by the integration
tests, the demo and the benchmark.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from pxefilterd_harness.dnsmasq import DnsmasqInstance


class DaemonError(RuntimeError):
    """The daemon did not do what was expected in time (log attached)."""


def _rootwrap_binary() -> str:
    path = Path(sys.executable).parent / "pxefilterd-rootwrap"
    if not path.exists():
        raise DaemonError(f"{path} not found: is pxefilterd installed "
                          "in this environment?")
    return str(path)


class NotifySocket:
    """A systemd notification socket (``$NOTIFY_SOCKET``) that keeps every
    datagram the daemon sends, with the monotonic time it arrived."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        self.messages: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.2)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(),
                                  data.decode(errors="replace")))

    def times(self, field: str) -> list[float]:
        """Arrival times of the messages carrying *field* (``WATCHDOG=1``)."""
        return [t for t, text in self.messages
                if field in text.split("\n")]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class PxefilterdRunner:
    """One pxefilterd process.  Construct, :meth:`start`, :meth:`stop`.

    :param options: extra ``{group: {option: value}}`` for the config file.
    :param reload: give pxefilterd the dnsmasq reload command (SIGHUP).
    """

    def __init__(self, workdir: str | os.PathLike[str], ironic_url: str,
                 dnsmasq: DnsmasqInstance, *, options: dict | None = None,
                 reload: bool = True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dnsmasq = dnsmasq
        self.hostsdir = dnsmasq.hostsdir
        self.conf_path = self.workdir / "pxefilterd.conf"
        self.log_path = self.workdir / "pxefilterd.log"
        self.proc: subprocess.Popen | None = None
        rootwrap_conf = self._write_rootwrap()
        groups: dict[str, dict[str, object]] = {
            "DEFAULT": {
                "root_helper": shlex.join([_rootwrap_binary(),
                                           str(rootwrap_conf)]),
                "debug": "False",
                "control_socket": str(self.workdir / "control.sock"),
            },
            "pxe_filter": {"inspection_poll_interval": 1},
            "dnsmasq_pxe_filter": {
                "dhcp_hostsdir": str(self.hostsdir),
                "dnsmasq_start_command": shlex.join(dnsmasq.start_argv()),
                "dnsmasq_stop_command": shlex.join(dnsmasq.stop_argv()),
                "dnsmasq_reload_command": (shlex.join(dnsmasq.reload_argv())
                                           if reload else ""),
                "command_timeout": 10,
                "lock_wait": 15,
                "dnsmasq_pid_file": str(dnsmasq.pid_path),
            },
            "ironic": {"auth_type": "none", "endpoint_override": ironic_url,
                       "timeout": 5, "api_retries": 1,
                       "api_retry_interval": 0.2},
        }
        for group, values in (options or {}).items():
            groups.setdefault(group, {}).update(values)
        self.conf_path.write_text("".join(
            "[%s]\n%s\n" % (group, "".join("%s = %s\n" % kv
                                           for kv in values.items()))
            for group, values in groups.items()))

    def ctl(self, *args: str, timeout: float = 30.0) -> str:
        """Run ``pxefilterd-ctl --config-file <this conf> ARGS``; return its
        output (stdout and stderr)."""
        ctl = Path(sys.executable).parent / "pxefilterd-ctl"
        res = subprocess.run([str(ctl), "--config-file", str(self.conf_path),
                              *args], capture_output=True, text=True,
                             timeout=timeout)
        return res.stdout + res.stderr

    def _write_rootwrap(self) -> Path:
        filters = self.workdir / "rootwrap.d"
        filters.mkdir(exist_ok=True)
        dm = self.dnsmasq
        conf = re.escape(f"--conf-file={dm.conf_path}")
        pidfile = re.escape(str(dm.pid_path))
        (filters / "test-dnsmasq.filters").write_text(
            "[Filters]\n"
            "# ip netns exec <server ns> <a command the filters below allow>\n"
            "ip: IpNetnsExecFilter, ip, root\n"
            # IpNetnsExecFilter hands on the inner argv with argv[0]
            # reduced to its basename.
            f"dnsmasq: RegExpFilter, {dm.binary}, root, "
            f"{re.escape(os.path.basename(dm.binary))}, {conf}\n"
            f"pkill: RegExpFilter, pkill, root, pkill, --signal, TERM|HUP, "
            f"--pidfile, {pidfile}, --exact, dnsmasq\n"
            # the shipped filters for ironic-inspector style commands
            # ("kill $(cat PIDFILE)"): only a dnsmasq may be signalled
            f"kill_dnsmasq: KillFilter, root, {dm.binary}\n"
            f"kill_dnsmasq_signal: KillFilter, root, {dm.binary}, -TERM, "
            f"-15, -HUP, -1\n")
        conf_path = self.workdir / "rootwrap.conf"
        conf_path.write_text(
            "[DEFAULT]\n"
            f"filters_path={filters}\n"
            "exec_dirs=/usr/sbin,/usr/bin,/sbin,/bin\n"
            "use_syslog=False\n")
        return conf_path

    # ------------------------------------------------------------ process

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, notify: NotifySocket | None = None) -> PxefilterdRunner:
        """Start the daemon (does not wait; see :meth:`wait_ready`).

        With *notify*, the daemon sends its systemd notifications there.
        """
        self._log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        if notify is not None:
            env["NOTIFY_SOCKET"] = notify.path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pxefilterd.cmd.daemon",
             "--config-file", str(self.conf_path)],
            stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, env=env)
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 30.0,
                     count: int = 1) -> None:
        """Wait until *text* is in the log *count* times; raise if not."""
        deadline = time.monotonic() + timeout
        while self.log_text().count(text) < count:
            if self.proc is not None and self.proc.poll() is not None:
                raise DaemonError(f"pxefilterd exited {self.proc.returncode}"
                                  f" while waiting for {text!r}:\n"
                                  + self.log_text()[-3000:])
            if time.monotonic() > deadline:
                raise DaemonError(f"no {text!r} in the log after {timeout}s:"
                                  "\n" + self.log_text()[-3000:])
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for the first sync and the dnsmasq start."""
        self.wait_for_log("Ready:", timeout)
        if not self.dnsmasq.is_running():
            raise DaemonError("pxefilterd is ready but dnsmasq is not "
                              "running:\n" + self.log_text()[-3000:])

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM the daemon and wait; return its exit status."""
        if self.proc is None:
            raise DaemonError("not started")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise DaemonError("pxefilterd did not exit after SIGTERM:\n"
                              + self.log_text()[-3000:]) from exc

    def kill(self) -> None:
        """SIGKILL the daemon (the guard should stop dnsmasq)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        """Kill the daemon if it still runs; close the log."""
        self.kill()
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> PxefilterdRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
