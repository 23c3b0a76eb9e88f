"""A Debian 12 container with systemd as PID 1, and the README's lines.

- :func:`five_minute_path` reads the commands of README.md's "Run it for
  real: the five-minute path" block (continuation lines joined), so that
  the test runs what the README shows, not a copy of it.
- :class:`Guest` boots a root built by ``tools/guest-root.sh`` under
  ``systemd-nspawn --boot`` in a network namespace the test created, with a
  throw-away overlay over the cached root (``--volatile=overlay``), and
  runs commands inside with ``nsenter`` (there is no machined here, so no
  ``machinectl``), in a clean root login environment.
- :class:`NetnsRelay` makes a TCP service of the host's 127.0.0.1 (the test's
  ironic) reachable on 127.0.0.1 inside that namespace, and can refuse
  connections for a while (ironic not up yet).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECTION = '## Run it for real: the five-minute path'
#: The environment of a root login shell on the guest.
GUEST_ENV = {'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:'
                     '/sbin:/bin',
             'HOME': '/root', 'LANG': 'C.UTF-8', 'TERM': 'dumb',
             'USER': 'root', 'LOGNAME': 'root', 'SHELL': '/bin/bash'}
_CLONE_NEWNET = 0x40000000


def five_minute_path(readme: Path = REPO / 'README.md') -> list[str]:
    """Return the commands of the README's five-minute path, in order.

    The first indented block after the section heading; a line ending in a
    backslash is joined with the next, and a line that is only a comment
    is dropped, as the shell would.  Raises ValueError if the section or
    its block is missing.
    """
    text = readme.read_text()
    start = text.index(SECTION)
    end = text.find('\n## ', start + 1)
    lines = text[start:end if end >= 0 else None].splitlines()
    block: list[str] = []
    for line in lines:
        if line.startswith('    '):
            block.append(line[4:])
        elif block:
            break
    if not block:
        raise ValueError('README.md: no command block in "%s"' % SECTION)
    commands: list[str] = []
    pending = ''
    for line in block:
        if line.rstrip().endswith('\\'):
            pending += line.rstrip()[:-1]
            continue
        command = (pending + line).strip() if pending else line.strip()
        pending = ''
        if command and not command.startswith('#'):
            commands.append(command)
    return commands


def editor_target(command: str) -> str | None:
    """The file of an ``$EDITOR FILE`` line, or None for any other line."""
    m = re.match(r'^\$EDITOR\s+(\S+)', command)
    return m.group(1) if m else None


def guest_root() -> Path:
    """Build (once) and return the cached root (tools/guest-root.sh)."""
    return Path(_tool('root'))


def guest_wheels() -> Path:
    """Build (once) and return the cached wheel directory."""
    return Path(_tool('wheels'))


def _tool(what: str) -> str:
    res = subprocess.run(['bash', str(REPO / 'tools' / 'guest-root.sh'), what],
                         capture_output=True, text=True, timeout=2400,
                         check=False)
    if res.returncode != 0:
        raise RuntimeError('tools/guest-root.sh %s failed:\n%s'
                           % (what, res.stderr[-3000:]))
    return res.stdout.strip().splitlines()[-1]


def build_checkout(dest: Path) -> Path:
    """Unpack an sdist of this checkout into *dest*; return its directory.

    The sdist holds every file git tracks (pbr), as a release tarball
    does, and its version (PKG-INFO), so ``pip install .`` needs no git.
    """
    dest.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        [str(REPO / '.venv' / 'bin' / 'python') if (REPO / '.venv').exists()
         else 'python3', 'setup.py', '-q', 'sdist', '-d', str(dest)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    if res.returncode != 0:
        raise RuntimeError('sdist failed:\n' + res.stderr[-3000:])
    tarball = next(dest.glob('pxefilterd-*.tar.gz'))
    src = dest / 'pxefilterd'
    src.mkdir()
    subprocess.run(['tar', '-C', str(src), '--strip-components=1', '-xzf',
                    str(tarball)], check=True, timeout=120)
    tarball.unlink()
    return src


class Guest:
    """One booted container; :meth:`close` powers it off (by PID)."""

    def __init__(self, root: Path, netns: str, binds: dict[str, str],
                 *, log: Path, timeout: float = 60.0):
        """Boot *root* in the netns ``/run/netns/NETNS``.

        *binds* maps host directories to guest paths (read-write).  Returns
        once ``systemctl is-system-running`` says running (or degraded).
        Raises RuntimeError (after powering off) if it does not boot.
        """
        argv = ['systemd-nspawn', '--quiet', '-D', str(root),
                '--register=no', '--keep-unit', '--volatile=overlay',
                '--network-namespace-path=/run/netns/%s' % netns,
                # what --private-network would grant: dnsmasq needs them
                '--capability=CAP_NET_ADMIN,CAP_NET_RAW',
                '--console=passive', '--hostname=pxefilterd-guest']
        for host, guest in binds.items():
            argv.append('--bind=%s:%s' % (host, guest))
        self.log_path = log
        with open(log, 'ab') as f:
            self.proc = subprocess.Popen(
                argv + ['--boot'], stdin=subprocess.DEVNULL, stdout=f,
                stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = None
        try:
            deadline = time.monotonic() + timeout
            while self.pid is None:
                self.pid = self._init_pid()
                if self.proc.poll() is not None:
                    raise RuntimeError('systemd-nspawn exited %s:\n%s'
                                       % (self.proc.returncode,
                                          log.read_text()[-2000:]))
                if time.monotonic() > deadline:
                    raise RuntimeError('no init in the container')
                time.sleep(0.1)
            while True:
                res = self.run('systemctl is-system-running --wait',
                               check=False, timeout=timeout)
                state = res.stdout.strip()
                if state in ('running', 'degraded'):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError('guest system is %r: %s'
                                       % (state, res.stderr))
                time.sleep(0.2)
        except BaseException:
            self.close()
            raise

    def _init_pid(self) -> int | None:
        try:
            with open('/proc/%d/task/%d/children'
                      % (self.proc.pid, self.proc.pid)) as f:
                children = f.read().split()
            if not children:
                return None
            with open('/proc/%s/comm' % children[0]) as f:
                # until then, nspawn's own child, not yet the guest's init
                return int(children[0]) if f.read().strip() == 'systemd' \
                    else None
        except OSError:
            return None

    def argv(self, command: str, user: str = 'root') -> list[str]:
        """nsenter argv running *command* with bash, as *user*, in /root."""
        inner = ['env', '-i'] + ['%s=%s' % kv for kv in GUEST_ENV.items()]
        if user != 'root':
            inner = ['runuser', '-u', user, '--'] + inner + [
                'HOME=/tmp', 'USER=%s' % user, 'LOGNAME=%s' % user]
        return ['nsenter', '-t', str(self.pid), '-a', '--'] + inner + [
            'bash', '-c', 'cd "$HOME" && ' + command]

    def run(self, command: str, *, user: str = 'root', check: bool = True,
            timeout: float = 60.0, cwd: str | None = None,
            env: dict[str, str] | None = None, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run *command* (bash) in the guest; stdout and stderr as text.

        *env* adds variables (e.g. a marked test substitution).  Raises
        AssertionError naming the command and its output if *check* and it
        fails, subprocess.TimeoutExpired after *timeout* seconds.
        """
        prefix = ''.join('export %s=%s; ' % (k, v)
                         for k, v in (env or {}).items())
        if cwd:
            prefix += 'cd %s && ' % cwd
        res = subprocess.run(self.argv(prefix + command, user),
                             input=stdin, capture_output=True, text=True,
                             timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise AssertionError(
                'guest: %r exited %d\nstdout:\n%s\nstderr:\n%s'
                % (command, res.returncode, res.stdout[-3000:],
                   res.stderr[-3000:]))
        return res

    def write(self, path: str, text: str) -> None:
        """Replace *path*'s content in the guest (mode and owner kept)."""
        self.run('cat > %s' % path, stdin=text)

    def read(self, path: str) -> str:
        return self.run('cat %s' % path).stdout

    def show(self, unit: str, prop: str) -> str:
        """One property of a unit (``systemctl show -p PROP --value``)."""
        return self.run('systemctl show -p %s --value %s'
                        % (prop, unit)).stdout.strip()

    def main_pid(self, unit: str) -> int:
        return int(self.show(unit, 'MainPID'))

    def host_pid(self, guest_pid: int) -> int | None:
        """The host PID of a guest PID (the guest has its own PID ns)."""
        for entry in os.listdir('/proc'):
            if not entry.isdigit():
                continue
            try:
                with open('/proc/%s/status' % entry) as f:
                    status = f.read()
            except OSError:
                continue
            m = re.search(r'^NSpid:\s+(.*)$', status, re.M)
            if m and m.group(1).split()[-1] == str(guest_pid) and \
                    self._in_guest(int(entry)):
                return int(entry)
        return None

    def _in_guest(self, pid: int) -> bool:
        try:
            return (os.readlink('/proc/%d/ns/pid' % pid)
                    == os.readlink('/proc/%d/ns/pid' % self.pid))
        except OSError:
            return False

    def journal(self, *units: str) -> str:
        args = ' '.join('-u %s' % u for u in units)
        return self.run('journalctl --no-pager -o short-monotonic %s' % args,
                        check=False).stdout

    def close(self) -> None:
        """Power the guest off (SIGTERM to nspawn = halt), SIGKILL after
        30 s; idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, 'setns %s: %s' % (path, os.strerror(err)))
    finally:
        os.close(fd)


class NetnsRelay:
    """127.0.0.1:PORT inside a namespace -> 127.0.0.1:PORT on the host.

    The listening socket is made in the namespace by a thread that enters
    it and comes back; every other socket is the host's.  While
    :attr:`refuse` is true, connections are closed at once (a service that
    is not up yet).  Threads are daemons; :meth:`close` stops accepting.
    """

    def __init__(self, netns: str, port: int):
        self.port = port
        self.refuse = False
        self._closed = False
        made: list[object] = []

        def make():
            here = '/proc/self/task/%d/ns/net' % threading.get_native_id()
            home = os.open(here, os.O_RDONLY)
            try:
                _setns('/run/netns/%s' % netns)
                try:
                    sock = socket.socket()
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(('127.0.0.1', port))
                    sock.listen(64)
                    made.append(sock)
                finally:
                    libc = ctypes.CDLL(None, use_errno=True)
                    libc.setns(home, _CLONE_NEWNET)
            except OSError as exc:
                made.append(exc)
            finally:
                os.close(home)

        # A thread of its own: it ends in the host's namespace or not at
        # all, and no other thread ever leaves it.
        t = threading.Thread(target=make)
        t.start()
        t.join()
        if isinstance(made[0], Exception):
            raise made[0]
        self._sock = made[0]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if self.refuse:
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _serve(self, conn):
        try:
            upstream = socket.create_connection(('127.0.0.1', self.port), 10)
        except OSError:
            conn.close()
            return
        upstream.settimeout(None)

        def pump(src, dst):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(upstream, conn),
                         daemon=True).start()
        pump(conn, upstream)
        conn.close()
        upstream.close()

    def close(self):
        self._closed = True
        self._sock.close()
