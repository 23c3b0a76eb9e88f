"""dnsmasq as pxefilterd's own child process (``[dnsmasq_pxe_filter]
dnsmasq_child_command``): the all-in-one mode of a container, with no
start / stop / reload commands, no root_helper and no pid file.

:class:`Child` starts dnsmasq in the foreground as a direct child, so its
pid is known and whether it runs is answered by ``waitpid`` (which also
reaps it: no zombie, no pid reuse while pxefilterd holds it).  Reload is a
SIGHUP and stop a SIGTERM (then SIGKILL), sent through a pidfd when the
kernel has them, so a signal never reaches another process that reused the
pid.

dnsmasq never outlives pxefilterd: the exit path stops it, and for the
deaths that skip the exit path (SIGKILL, OOM) the guard process does
(:mod:`pxefilterd.guard`: it is told the child's pid at each start, and
stops that process when the daemon's pipe closes).  The kernel's
parent-death signal (``PR_SET_PDEATHSIG``, set in the child between fork
and exec) is set too, but only holds while dnsmasq keeps its credentials:
dnsmasq drops root to its user after start-up, which clears it (it still
covers a dnsmasq run with ``--user=root`` and one that fails before).  That
signal follows the *thread* that forked the child, so :meth:`Child.spawn`
is called by the loop thread, the daemon's main thread.  In a container,
pxefilterd under an init as the first process: the container ends with
pxefilterd, and the kernel kills every process of its pid namespace.

The supervisor (:mod:`pxefilterd.supervisor`) sees such a dnsmasq as a
managed one observed directly: :class:`ChildHandle` gives it the same
inputs as :class:`pxefilterd.dnsmasq.Handle` does for a commanded dnsmasq.

One thread only: every method of :class:`Child` is called by the loop
thread, the reload included (the service gives the writer a
:class:`pxefilterd.dnsmasq.Immediate` runner in child mode: a signal never
blocks).  So the observers (the guard) are told of each child and of its
end in the order they happened, and the pidfd is never closed under a
signal being sent through it.  A reload run by the command thread could
tell the guard "none" after the loop thread announced the next child: the
guard would then stop nothing if pxefilterd is killed.
"""

import concurrent.futures
import ctypes
import logging
import os
import shlex
import signal
import subprocess
import time

from pxefilterd import commands
from pxefilterd import dnsmasq
from pxefilterd import pidsource

LOG = logging.getLogger(__name__)

OPTION = '[dnsmasq_pxe_filter] dnsmasq_child_command'
#: The dnsmasq words that keep it in the foreground.
FOREGROUND = frozenset(('-k', '--keep-in-foreground', '-d', '--no-daemon'))
_PR_SET_PDEATHSIG = 1
#: What the kernel sends dnsmasq when pxefilterd dies.
DEATH_SIGNAL = signal.SIGKILL
#: Seconds a new child is left to start up before it is sent a SIGHUP (a
#: reload asked for sooner is held until then).  dnsmasq sets its signal
#: handlers only once it runs (after any wrapper, such as ``ip netns
#: exec``, has exec'd it): until then SIGHUP's default action kills it.
#: And during its start-up it ignores SIGHUP: the reload would be lost.
SETTLE = 2.0


def argv_from_line(line):
    """Return the argv to run for a ``dnsmasq_child_command`` line: its
    words, with ``--keep-in-foreground`` added unless dnsmasq is already
    told to stay in the foreground (a dnsmasq that forks away would be no
    child of pxefilterd's).

    :raises ValueError: with one line saying why the line is unusable:
        empty, unparsable, shell expansions (nothing here runs a shell),
        or no word is dnsmasq.
    """
    line = (line or '').strip()
    if not line:
        raise ValueError('empty')
    if commands.needs_shell(line):
        raise ValueError('has shell expansions ($ or `): it is run as an '
                         'argv, without a shell')
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise ValueError('cannot be parsed: %s' % exc) from None
    dm = pidsource.dnsmasq_argv(words)
    if dm is None:
        raise ValueError('names no dnsmasq program (a word whose basename is '
                         '"dnsmasq", possibly after a wrapper that execs it, '
                         'such as "ip netns exec NS")')
    if not FOREGROUND & set(dm[1:]):
        words.append('--keep-in-foreground')
    return words


def problems(group):
    """Problem lines for the ``[dnsmasq_pxe_filter]`` options ``group``
    when ``dnsmasq_child_command`` is set (none when it is not)."""
    if not group.dnsmasq_child_command:
        return []
    try:
        argv = argv_from_line(group.dnsmasq_child_command)
    except ValueError as exc:
        return ['%s = %s: %s' % (OPTION, group.dnsmasq_child_command, exc)]
    found = ['%s: %s' % (OPTION, p) for p in pidsource.check_dnsmasq_argv(
        pidsource.dnsmasq_argv(argv))]
    others = [name for name in ('dnsmasq_start_command',
                                'dnsmasq_stop_command',
                                'dnsmasq_reload_command', 'dnsmasq_pid_file')
              if getattr(group, name)]
    if others:
        found.append('%s cannot be combined with %s: pxefilterd starts, '
                     'watches, reloads and stops its child dnsmasq itself'
                     % (OPTION, ', '.join(others)))
    return found


#: The signals pxefilterd sends its child that could be ignored (reload,
#: stop; SIGKILL cannot).
_SENT = (signal.SIGHUP, signal.SIGTERM)


def _die_with(parent):
    """The child's preexec function: be killed with ``parent``."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec():
        # An ignored signal stays ignored across exec: a pxefilterd started
        # under nohup (or a test runner) would hand dnsmasq an ignored
        # SIGHUP or SIGTERM, and its reload or stop would do nothing.
        for signum in _SENT:
            signal.signal(signum, signal.SIG_DFL)
        if prctl(_PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), 'prctl(PR_SET_PDEATHSIG)')
        if os.getppid() != parent:
            # pxefilterd died before the signal was set: nobody sends it
            os.kill(os.getpid(), DEATH_SIGNAL)
    return preexec


def _describe_exit(code):
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = 'signal %d' % -code
        return 'was killed by %s' % name
    return 'exited with status %d' % code


class Child:
    """One dnsmasq run as a child, started again and again.

    :param argv: its argv (:func:`argv_from_line`).
    :param timeout: seconds a stop waits for it after SIGTERM, before
        SIGKILL.
    :param clock: the monotonic clock (for :data:`SETTLE`).

    Not thread-safe, on purpose: one thread calls it (see the module doc).
    """

    def __init__(self, argv, timeout=30.0, clock=time.monotonic):
        self.argv = list(argv)
        self.timeout = timeout
        self._clock = clock
        self._proc = None
        self._pidfd = None
        self._announced = None
        self._spawned_at = None
        self._held = None           # the Future of a held reload
        #: callables(pid or None), told of each new child and of its end
        #: (once reaped, its pid may be reused)
        self.observers = []

    @property
    def pid(self):
        return self._proc.pid if self._proc is not None else None

    def spawn(self):
        """Start dnsmasq (after stopping one still running).  Returns once
        it is exec'd; whether it stays up is for :meth:`observe` to say.

        :raises commands.CommandError: it could not be started.
        """
        if self._proc is not None and self._poll(self._proc) is None:
            self.stop()
        self._close_pidfd()
        try:
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, cwd='/',
                close_fds=True, start_new_session=True,
                preexec_fn=_die_with(os.getpid()))
        except (OSError, subprocess.SubprocessError) as exc:
            self._proc = None
            raise commands.CommandError(
                'dnsmasq %s could not be started: %s'
                % (shlex.join(self.argv), getattr(exc, 'strerror', None)
                   or exc)) from exc
        try:
            self._pidfd = os.pidfd_open(self._proc.pid)
        except (AttributeError, OSError):
            self._pidfd = None      # an old kernel: plain kill(2)
        self._spawned_at = self._clock()
        # a held reload is done: this dnsmasq reads every file as it starts
        self._finish_held(None)
        LOG.info('dnsmasq started as a child of pxefilterd: pid %d, %s',
                 self._proc.pid, shlex.join(self.argv))
        self._announced = self._proc.pid
        self._tell(self._proc.pid)

    def _tell(self, pid):
        for observer in self.observers:
            observer(pid)

    def _poll(self, proc):
        """``proc.poll()``, telling the observers once it has ended."""
        code = proc.poll()
        if code is not None and self._announced == proc.pid:
            self._announced = None
            self._tell(None)
        return code

    def observe(self):
        """Return a :class:`pxefilterd.dnsmasq.Observation` (and reap it if
        it has exited)."""
        proc = self._proc
        if proc is None:
            return dnsmasq.Observation(dnsmasq.GONE,
                                       detail='not started yet')
        code = self._poll(proc)
        if code is None:
            self._release_reload()
            return dnsmasq.Observation(dnsmasq.RUNNING, proc.pid,
                                       'pid %d, a child of pxefilterd'
                                       % proc.pid)
        self._finish_held(commands.CommandError(
            'dnsmasq (pid %d) exited before its held reload' % proc.pid))
        return dnsmasq.Observation(dnsmasq.GONE, proc.pid, 'pid %d %s'
                                   % (proc.pid, _describe_exit(code)))

    def send(self, signum):
        """Send ``signum`` to the running dnsmasq.

        :raises commands.CommandError: it does not run.
        """
        proc = self._proc
        if proc is None or self._poll(proc) is not None:
            raise commands.CommandError('dnsmasq does not run: no %s sent'
                                        % signal.Signals(signum).name)
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signum)
            else:
                os.kill(proc.pid, signum)
        except ProcessLookupError:
            raise commands.CommandError(
                'dnsmasq (pid %d) has just exited: no %s sent'
                % (proc.pid, signal.Signals(signum).name)) from None

    def _settled(self):
        return self._clock() - self._spawned_at >= SETTLE

    def reload(self):
        """Have dnsmasq re-read its files (SIGHUP); return a Future that is
        done once the signal is sent (its exception: it was not).

        Sent at once when dnsmasq has been up for :data:`SETTLE` seconds;
        sooner, held and sent by the first :meth:`observe` after (the loop
        looks at least once a second): it re-reads the files as they are
        then, newer than when the reload was asked for.  The Future stays
        pending meanwhile, so that the writer does not take a reload that
        has not happened for one that has (it loosens the wildcard and
        drops deny records only after dnsmasq re-read).

        :raises commands.CommandError: it does not run.
        """
        proc = self._proc
        if proc is None or self._poll(proc) is not None:
            raise commands.CommandError('dnsmasq does not run: no SIGHUP '
                                        'sent')
        if not self._settled():
            if self._held is None:
                LOG.debug('dnsmasq (pid %d) started %.1f s ago: its reload '
                          'is held until it has been up %.0f s', proc.pid,
                          self._clock() - self._spawned_at, SETTLE)
                self._held = concurrent.futures.Future()
            return self._held
        self.send(signal.SIGHUP)
        done = concurrent.futures.Future()
        done.set_result('')
        return done

    def _release_reload(self):
        """Send a held reload once the running child has settled."""
        if self._held is not None and self._settled():
            try:
                self.send(signal.SIGHUP)
            except commands.CommandError as exc:
                self._finish_held(exc)
            else:
                self._finish_held(None)

    def _finish_held(self, exc):
        held, self._held = self._held, None
        if held is not None:
            if exc is None:
                held.set_result('')
            else:
                held.set_exception(exc)

    def stop(self, timeout=None):
        """SIGTERM, wait up to ``timeout`` (default: the one given at
        construction), then SIGKILL; return once it is gone (and reaped).
        Does nothing if it does not run.

        :raises commands.CommandError: it survived SIGKILL for 5 s (a
            process in uninterruptible sleep).
        """
        proc = self._proc
        if proc is None or self._poll(proc) is not None:
            return
        timeout = self.timeout if timeout is None else timeout
        for signum, wait in ((signal.SIGTERM, timeout),
                             (signal.SIGKILL, 5.0)):
            try:
                self.send(signum)
            except commands.CommandError:
                return          # exited meanwhile
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                if signum == signal.SIGTERM:
                    LOG.warning('dnsmasq (pid %d) did not exit %.1f s after '
                                'SIGTERM; sending SIGKILL', proc.pid, wait)
                continue
            LOG.info('dnsmasq (pid %d) stopped: %s', proc.pid,
                     _describe_exit(proc.returncode))
            self._poll(proc)
            return
        raise commands.CommandError('dnsmasq (pid %d) survives SIGKILL'
                                    % proc.pid)

    def kill(self):
        """SIGKILL without waiting (the next look reaps it)."""
        try:
            self.send(signal.SIGKILL)
        except commands.CommandError:
            pass

    def _close_pidfd(self):
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


class _Act:
    """A :class:`pxefilterd.commands.Command` stand-in that acts on the
    child instead of running a program (what the writer, the exit path and
    the guard's bookkeeping hold)."""

    def __init__(self, name, act, timeout):
        self.name = name
        self._act = act
        self.timeout = timeout

    def __bool__(self):
        return True

    def run(self):
        """Return what the action returns ('' for None; a reload returns
        a Future, see :meth:`Child.reload`).

        :raises commands.CommandError: the action failed.
        """
        result = self._act()
        return '' if result is None else result

    def spec(self):
        """For the guard (:class:`pxefilterd.guard.ChildStop`)."""
        return {'child': True, 'timeout': self.timeout}


class ChildCommands:
    """What stands for the start, stop and reload commands of
    :class:`pxefilterd.commands.Commands` in child mode: start spawns,
    stop stops, reload sends SIGHUP (:meth:`Child.reload`)."""

    def __init__(self, child):
        self.start = _Act('start', child.spawn, child.timeout)
        self.stop = _Act('stop', child.stop, child.timeout)
        self.reload = _Act('reload', child.reload, child.timeout)


class ChildHandle:
    """:class:`pxefilterd.dnsmasq.Handle`'s interface for a child dnsmasq.

    Everything runs in the caller's thread, the loop thread (see the module
    doc): a spawn returns as soon as dnsmasq is exec'd.
    """

    def __init__(self, child):
        self.child = child
        self._done = None

    def news(self):
        """Return ``(observation, done)`` as :meth:`Handle.news` does."""
        done, self._done = self._done, None
        return self.child.observe(), done

    def start(self):
        try:
            self.child.spawn()
        except commands.CommandError as exc:
            self._done = dnsmasq.Done(str(exc))
        else:
            self._done = dnsmasq.Done(None)

    def stop_quietly(self, why):
        LOG.info('Killing the child dnsmasq: %s', why)
        self.child.kill()

    def run_now(self, command, waiting):
        return command.run()

    def stop_now(self):
        """:raises commands.CommandError: dnsmasq could not be stopped."""
        self.child.stop()
