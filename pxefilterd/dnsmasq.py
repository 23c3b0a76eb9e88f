"""dnsmasq as pxefilterd drives it: its commands run off the loop thread,
and whether it runs is observed, not assumed.

:class:`CommandRunner` runs the start / stop / reload commands one at a time
in a thread of its own, so the loop that keeps the hostsdir right and pings
systemd never waits for one (each has ``command_timeout`` anyway).

:func:`observe` tells whether dnsmasq runs, from its pid file
(``[dnsmasq_pxe_filter] dnsmasq_pid_file``): the file must name a live
process whose name is ``dnsmasq``.  No external command is needed, so the
loop checks at every iteration (at least once a second).  Without a pid
file nothing can be observed, and the state says so.

:class:`Handle` is what the supervisor (:mod:`pxefilterd.supervisor`, which
decides) acts through: it runs the start and stop commands it asks for and
gathers what it needs to know at each step.
"""

import concurrent.futures
import dataclasses
import logging
import queue
import subprocess
import threading
import typing

from pxefilterd import pidsource

LOG = logging.getLogger(__name__)

RUNNING = 'running'
GONE = 'gone'
UNKNOWN = 'unknown'


@dataclasses.dataclass(frozen=True)
class Observation:
    """What could be seen of dnsmasq.

    :ivar state: :data:`RUNNING`, :data:`GONE` or :data:`UNKNOWN`.
    :ivar pid: its process ID, when known.
    :ivar detail: one line saying what was seen.
    """

    state: str
    pid: typing.Optional[int] = None
    detail: str = ''


def process_name(pid):
    """Return ``(name, state letter)`` of ``pid``, or None if it is gone."""
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            data = f.read()
    except OSError:
        return None
    open_paren, close_paren = data.index(b'('), data.rindex(b')')
    name = data[open_paren + 1:close_paren].decode('utf-8', 'replace')
    state = data[close_paren + 2:close_paren + 3].decode('ascii', 'replace')
    return name, state


def observe(pid_file):
    """Return an :class:`Observation` from ``pid_file`` (or None)."""
    if not pid_file:
        return Observation(UNKNOWN, detail='not observed: no '
                           '[dnsmasq_pxe_filter] dnsmasq_pid_file')
    try:
        with open(pid_file, 'rb') as f:
            text = f.read(64).decode('ascii', 'replace').strip()
    except FileNotFoundError:
        return Observation(GONE, detail='its pid file %s does not exist'
                           % pid_file)
    except OSError as exc:
        return Observation(UNKNOWN, detail='its pid file %s cannot be read: '
                           '%s' % (pid_file, exc.strerror or exc))
    try:
        pid = int(text)
    except ValueError:
        return Observation(GONE, detail='its pid file %s holds %r, not a pid'
                           % (pid_file, text[:20]))
    if pid <= 0:
        return Observation(GONE, detail='its pid file %s holds %d'
                           % (pid_file, pid))
    seen = process_name(pid)
    if seen is None:
        return Observation(GONE, pid, 'pid %d (from %s) does not exist'
                           % (pid, pid_file))
    name, state = seen
    if state in ('Z', 'X'):
        return Observation(GONE, pid, 'pid %d (from %s) has exited'
                           % (pid, pid_file))
    if name != 'dnsmasq':
        return Observation(GONE, pid, 'pid %d (from %s) is %r, not dnsmasq'
                           % (pid, pid_file, name))
    return Observation(RUNNING, pid, 'pid %d' % pid)


@dataclasses.dataclass(frozen=True)
class Done:
    """The start command ended: ``error`` is None, or why it failed."""

    error: typing.Optional[str] = None


class CommandRunner:
    """Runs commands one at a time in a daemon thread.

    :meth:`submit` returns a :class:`concurrent.futures.Future` whose result
    is the command's output, or whose exception is its
    :class:`pxefilterd.commands.CommandError`.  (Not a thread pool: the
    interpreter joins those at exit, and a hung command must not hold the
    exit.)
    """

    def __init__(self, wake=None):
        self._wake = wake
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work,
                                        name='dnsmasq-command', daemon=True)
        self._thread.start()

    def _work(self):
        while True:
            job = self._jobs.get()
            if job is None:
                return
            command, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(command.run())
            except Exception as exc:
                future.set_exception(exc)
            if self._wake is not None:
                self._wake()

    def submit(self, command):
        future = concurrent.futures.Future()
        self._jobs.put((command, future))
        return future

    def shutdown(self):
        """Stop taking commands; a running one is left to finish alone."""
        self._jobs.put(None)

    def alive(self):
        return self._thread.is_alive()


class Immediate:
    """A :class:`CommandRunner` stand-in that runs commands at once, in the
    caller's thread (for tools and tests that have no loop to protect)."""

    def submit(self, command):
        """Run ``command`` now; return a Future of its outcome (the
        command's own Future when it returns one: a child's held reload)."""
        future = concurrent.futures.Future()
        try:
            result = command.run()
        except Exception as exc:
            future.set_exception(exc)
            return future
        if isinstance(result, concurrent.futures.Future):
            return result
        future.set_result(result)
        return future

    def shutdown(self):
        pass


class Handle:
    """The start and stop commands of one dnsmasq, and its pid file.

    :param cmds: the :class:`pxefilterd.commands.Commands`.
    :param runner: the :class:`CommandRunner` they run in.
    :param pid_file: the pid file, or None.
    """

    def __init__(self, cmds, runner, pid_file):
        self.cmds = cmds
        self.runner = runner
        self.pid_file = pid_file
        self._start = None          # the start command's future

    def news(self):
        """Return ``(observation, done)``: what the pid file shows, and a
        :class:`Done` if the start command ended since the last call (else
        None)."""
        done = None
        if self._start is not None and self._start.done():
            exc, self._start = self._start.exception(), None
            done = Done(None if exc is None else str(exc))
        return observe(self.pid_file), done

    def start(self):
        """Have the start command run (in the command thread)."""
        self._start = self.runner.submit(self.cmds.start)

    def stop_quietly(self, why):
        """Have the stop command run in the command thread (so, before any
        later start); a failure is logged, not raised."""
        if not self.cmds.stop:
            return

        def done(future):
            exc = future.exception()
            if exc is not None:
                LOG.warning('Stop command after "%s" failed: %s', why, exc)
        self.runner.submit(self.cmds.stop).add_done_callback(done)

    def run_now(self, command, waiting):
        """Run ``command`` in the command thread and wait for it, calling
        ``waiting()`` every second meanwhile (e.g. a watchdog ping).

        :raises commands.CommandError: the command failed.
        """
        future = self.runner.submit(command)
        while True:
            try:
                return future.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                waiting()

    def stop_now(self):
        """Run the stop command in this thread, after a start still in
        flight has ended (it could bring dnsmasq up after the stop; it is
        killed at its timeout).  Not in the command thread: a reload still
        running there must not delay it.

        :raises commands.CommandError: the stop command failed.
        """
        if self._start is not None:
            try:
                self._start.exception(timeout=self.cmds.start.timeout + 1)
            except Exception:
                pass
        self.cmds.stop.run()


def unit_exec_start(unit, timeout=5.0):
    """The argv of systemd unit ``unit``'s ExecStart, asked of systemd once
    (``systemctl show``; needs no privilege), or None: no systemd, no such
    unit, or no answer within ``timeout`` seconds."""
    try:
        res = subprocess.run(
            ['systemctl', 'show', '--property=ExecStart', '--value', '--',
             unit], stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    return pidsource.exec_start_argv(res.stdout)


def pid_source(group):
    """Where dnsmasq's pid file is, from the ``[dnsmasq_pxe_filter]``
    options ``group`` (:func:`pxefilterd.pidsource.derive`); the unit of a
    ``systemctl start UNIT`` start command is asked of systemd once."""
    return pidsource.derive(group.dnsmasq_pid_file,
                            group.dnsmasq_start_command,
                            group.dnsmasq_stop_command,
                            group.dnsmasq_reload_command,
                            unit_argv=unit_exec_start)
