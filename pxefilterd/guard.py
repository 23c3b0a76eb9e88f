"""Dead-man switch: stop dnsmasq when pxefilterd dies without cleaning up.

The daemon starts this module as a separate process (its own session, so a
Ctrl-C or a signal to the daemon's process group does not reach it) and keeps
the only write end of a pipe.  The guard blocks on the read end:

* ``A`` (armed): the daemon is about to start dnsmasq; from now on the guard
  owes a stop.
* ``D`` (disarmed): the daemon ran its own stop command; the guard exits
  without doing anything.
* end of file while armed: the daemon died (SIGKILL, OOM, crash); the kernel
  closed its descriptors at once, so the guard runs the stop command now.
* ``P<pid>\n`` (a dnsmasq run as the daemon's child,
  :mod:`pxefilterd.child`): the pid of the child now (0: none).  Its stop
  is then no command: the guard sends that process SIGTERM (SIGKILL after
  the timeout), if it is still a process named ``dnsmasq``.  (The kernel's
  parent-death signal cannot do it: dnsmasq drops root, which clears it.)

The guard also inherits the hostsdir lock descriptor: the lock is released
only when both processes have exited, i.e. after the stop command has run.
A new pxefilterd waits for that lock before it starts its own dnsmasq, so the
guard can never stop a dnsmasq that a newer instance started.

SIGTERM to the guard (e.g. systemd killing the whole cgroup) also runs the
stop command if armed: the guard fails closed, never open.  It then exits
with :data:`EXIT_TERMINATED` so that a daemon still alive knows dnsmasq was
stopped under it and starts it again.

Exit statuses: 0 nothing done (disarmed, or never armed), 1 the stop command
failed, :data:`EXIT_TERMINATED` (3) stopped dnsmasq because it was
signalled, :data:`EXIT_ORPHANED` (4) stopped dnsmasq because the daemon died.
"""

import json
import os
import signal
import subprocess
import sys
import time

from pxefilterd import commands
from pxefilterd import dnsmasq

ARM = b'A'
DISARM = b'D'
PID = b'P'
EXIT_TERMINATED = 3
EXIT_ORPHANED = 4


def _log(msg):
    sys.stderr.write('pxefilterd-guard[%d]: %s\n' % (os.getpid(), msg))
    sys.stderr.flush()


def guard_argv(spec):
    """The argv that starts the guard with the daemon's interpreter.

    Isolated mode (``-I``): neither the working directory nor ``PYTHON*``
    variables nor the user's site directory reach ``sys.path``, so the guard
    (often root) imports pxefilterd from where the interpreter has it
    installed (a venv included), never from the directory it was started
    in, which another user may own.  The caller also runs it in ``/``.
    """
    return [sys.executable, '-I', '-m', 'pxefilterd.guard', spec]


class Guard:
    """The daemon's handle on its guard process."""

    def __init__(self, stop, lock_fd):
        read_fd, self._write_fd = os.pipe()
        os.set_inheritable(read_fd, True)
        fds = [read_fd]
        if lock_fd is not None:
            os.set_inheritable(lock_fd, True)
            fds.append(lock_fd)
        spec = json.dumps({'fd': read_fd, 'stop': stop.spec()})
        self.proc = subprocess.Popen(
            guard_argv(spec), cwd='/',
            stdin=subprocess.DEVNULL, pass_fds=fds, start_new_session=True,
            close_fds=True)
        os.close(read_fd)
        if lock_fd is not None:
            os.set_inheritable(lock_fd, False)

    def alive(self):
        return self.proc.poll() is None

    def arm(self):
        os.write(self._write_fd, ARM)

    def child_pid(self, pid):
        """The daemon's child dnsmasq is now ``pid`` (0 or None: none)."""
        os.write(self._write_fd, PID + b'%d\n' % (pid or 0))

    def disarm(self, wait=5.0):
        """Tell the guard the stop is done; wait for it to exit."""
        try:
            os.write(self._write_fd, DISARM)
        except OSError:
            pass
        self.close(wait)

    def close(self, wait=5.0):
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            _log('guard %d did not exit within %.1f s' % (self.proc.pid, wait))


def _is_dnsmasq(pid):
    """True if ``pid`` runs (not a zombie) and is named dnsmasq."""
    seen = dnsmasq.process_name(pid)
    return seen is not None and seen[0] == 'dnsmasq' and seen[1] not in (
        'Z', 'X')


def _stop_child(pid, timeout):
    """SIGTERM the child dnsmasq ``pid`` (no longer the daemon's: it has
    died), SIGKILL after ``timeout``; return whether it is gone."""
    for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not _is_dnsmasq(pid):
            return True
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while _is_dnsmasq(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    return not _is_dnsmasq(pid)


class ChildStop:
    """The stop of a child dnsmasq, as the guard runs it."""

    def __init__(self, timeout):
        self.timeout = timeout
        self.pid = 0

    def __bool__(self):
        return True

    def run(self):
        if not self.pid:
            _log('no child dnsmasq runs')
            return
        if not _stop_child(self.pid, self.timeout):
            raise commands.CommandError('dnsmasq (pid %d) survives SIGKILL'
                                        % self.pid)


def _stop_from_spec(spec):
    if spec.get('child'):
        return ChildStop(spec['timeout'])
    return commands.Command.from_spec(spec)


def _run_stop(stop, why, code):
    """Run the stop command; return ``code``, or 1 if it failed."""
    if not stop:
        _log('%s; no stop command configured' % why)
        return 1
    _log('%s; running the stop command' % why)
    started = time.monotonic()
    try:
        stop.run()
    except commands.CommandError as exc:
        _log(str(exc))
        return 1
    _log('dnsmasq stopped in %.2f s' % (time.monotonic() - started))
    return code


class _Terminated(Exception):
    pass


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Terminated()


def main(argv=None):
    spec = json.loads((argv or sys.argv)[1])
    fd, stop = spec['fd'], _stop_from_spec(spec['stop'])
    armed = False
    pending = b''
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    while True:
        try:
            data = os.read(fd, 64)
        except _Terminated:
            if armed:
                return _run_stop(stop, 'guard terminated', EXIT_TERMINATED)
            return 0
        if not data:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if armed:
                return _run_stop(stop, 'pxefilterd died without stopping '
                                 'dnsmasq', EXIT_ORPHANED)
            return 0
        pending += data
        while pending:
            byte, pending = pending[:1], pending[1:]
            if byte == DISARM:
                return 0
            if byte == ARM:
                armed = True
            elif byte == PID:
                line, sep, rest = pending.partition(b'\n')
                if not sep:
                    pending = byte + pending    # the rest is to come
                    break
                pending = rest
                if isinstance(stop, ChildStop) and line.isdigit():
                    stop.pid = int(line)


if __name__ == '__main__':
    sys.exit(main())
