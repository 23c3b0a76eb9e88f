"""dnsmasq supervision: every state, every transition, in one place.

Sans-I/O (h11's ``_state.py`` is the model): :class:`Supervisor` holds what
pxefilterd knows of dnsmasq and decides what to do next.  It runs no
command, reads no file, never sleeps and never raises; the service feeds it
what happened and carries out the :class:`Action` it returns
(``Service._act``, through :class:`pxefilterd.dnsmasq.Handle`).  Inputs of
:meth:`Supervisor.step`: the time, what dnsmasq's pid file shows
(:func:`pxefilterd.dnsmasq.observe`), the outcome of the start command
once it ended, and the exit status of a guard process that died.

States::

    state       status                     serving running
    STOPPED     stopped                    no      no
    STARTING    starting                   no      no
    LAUNCHED    starting                   yes     yes
    RUNNING     running                    yes     yes
    UNOBSERVED  not observed               yes     yes
    BACKOFF     stopped                    no      no
    ELSEWHERE   unknown (assumed running)  yes     yes
    GONE        gone                       yes     no

- STOPPED: not started yet (before the first sync), or stopped at exit;
- STARTING: the start command runs;
- LAUNCHED: it succeeded; dnsmasq has START_GRACE seconds to show up in
  its pid file (a child dnsmasq is looked at directly, at once);
- RUNNING: seen running in its pid file;
- UNOBSERVED: no pid file is known, so whether dnsmasq runs cannot be
  seen (it is assumed to run once started);
- BACKOFF: a start failed; the next one is due at ``due``;
- ELSEWHERE: started by someone else (no start command), not looked at
  yet;
- GONE: started by someone else, and seen gone: pxefilterd cannot start
  it, and keeps the hostsdir right for when it is back.

The status is what ``pxefilterd-ctl status``, explain and the metrics show.
``serving`` (dnsmasq may be reading the hostsdir: the writer paces its
writes or reloads) and ``running`` are read from the state, nowhere else.
A pid file that cannot be read (an *unknown look*) changes no state: the
status says ``unknown (assumed running)`` (or ``unknown`` when the state
is not a running one) until the next look.

Transitions.  *young*: less than START_GRACE seconds since the start
command succeeded.  ``failed*``: a failed start, one more failure in a row:
BACKOFF, due after ``backoff.delay(failures, 16 s)``; the START_ATTEMPTS-th
failure in a row gives FATAL instead.  Failures in a row end with a start
that succeeded without a pid file, or with a dnsmasq seen running once it
is no longer young.  *a child*: dnsmasq is pxefilterd's own child
(``direct``): ``waitpid`` says at once whether it runs, so one seen gone
has exited and is not waited for.  *guard stop*: a guard process died with
status 3 or 4 (it ran the stop command)::

    from        on                                 to          do
    STOPPED     begin(): the first sync is done    STARTING    START
    STOPPED     adopt(), a pid file                ELSEWHERE   -
    STOPPED     adopt(), no pid file               UNOBSERVED  -
    STARTING    the start command runs             STARTING    NOTHING
    STARTING    it failed                          failed*     NOTHING
    STARTING    it succeeded, a pid file           LAUNCHED    STARTED
    STARTING    it succeeded, no pid file          UNOBSERVED  STARTED
    BACKOFF     not due yet                        BACKOFF     NOTHING
    BACKOFF     due                                STARTING    RELAUNCH
    LAUNCHED    seen running                       RUNNING     NOTHING
    LAUNCHED    seen gone, a child                 failed*     NOTHING
    LAUNCHED    seen gone, young                   LAUNCHED    NOTHING
    LAUNCHED    seen gone, not young               failed*     STOP
    RUNNING     seen running                       RUNNING     NOTHING
    RUNNING     seen gone, young                   failed*     NOTHING
    RUNNING     seen gone, not young               STARTING    RELAUNCH
    ELSEWHERE   seen running                       RUNNING     NOTHING
    ELSEWHERE   seen gone                          GONE        NOTHING
    RUNNING     seen gone, no start command        GONE        NOTHING
    GONE        seen gone                          GONE        NOTHING
    GONE        seen running                       RUNNING     NOTHING
    any         an unknown look                    (same)      NOTHING
    UNOBSERVED  guard stop                         STARTING    RELAUNCH
    BACKOFF     guard stop, no pid file            STARTING    RELAUNCH
    any         guard stop, no start command       (same)      FATAL
    other       guard stop                         (same)      NOTHING
    any         stopped(): the exit path stopped   STOPPED     -

A guard stop changes nothing in the other states: with a pid file the look
decides (a start here could race a restart that already brought dnsmasq
back), and a start in flight brings it back.  The first look after a start
that succeeded is taken in the same step.  GONE is logged once, when
entered.

Actions: START runs the start command; RELAUNCH re-asserts the hostsdir (a
rescan) and runs it (a *restart*, of a dnsmasq that stopped, is logged as
an error and told to systemd; a *retry*, from BACKOFF, was announced by the
failed start's log line); STARTED:
dnsmasq has just read every file (the writer starts afresh; the daemon is
ready after the first one); STOP stops whatever a start that never showed
up left running, before the next try (two would fight over the port);
FATAL: pxefilterd exits 1, and its exit path stops dnsmasq.
"""

import dataclasses
import enum
import logging
import typing

from pxefilterd import backoff
from pxefilterd import dnsmasq
from pxefilterd import guard

LOG = logging.getLogger(__name__)

#: Starts of dnsmasq in a row that may fail (or leave no dnsmasq running
#: after START_GRACE) before pxefilterd gives up and exits.
START_ATTEMPTS = 5
#: Seconds a started dnsmasq has to show up in its pid file.
START_GRACE = 15.0
_START_BACKOFF_MAX = 16.0


class DnsmasqFailure(Exception):
    """dnsmasq cannot be kept serving: pxefilterd must exit."""


class State(enum.Enum):
    STOPPED = 'stopped'
    STARTING = 'starting'
    LAUNCHED = 'launched'
    RUNNING = 'running'
    UNOBSERVED = 'unobserved'
    BACKOFF = 'backoff'
    ELSEWHERE = 'elsewhere'
    GONE = 'gone'


_ASSUMED = 'unknown (assumed running)'

#: What ``pxefilterd-ctl status`` and the metrics show for each state.
STATUS = {
    State.STOPPED: 'stopped',
    State.STARTING: 'starting',
    State.LAUNCHED: 'starting',
    State.RUNNING: 'running',
    State.UNOBSERVED: 'not observed',
    State.BACKOFF: 'stopped',
    State.ELSEWHERE: _ASSUMED,
    State.GONE: 'gone',
}
_SERVING = frozenset({State.LAUNCHED, State.RUNNING, State.UNOBSERVED,
                      State.ELSEWHERE, State.GONE})
_RUNNING = frozenset({State.LAUNCHED, State.RUNNING, State.UNOBSERVED,
                      State.ELSEWHERE})
# The states in which what the pid file shows is looked at.
_LOOKING = frozenset({State.LAUNCHED, State.RUNNING, State.ELSEWHERE,
                      State.GONE})


class Do(enum.Enum):
    NOTHING = 'nothing'
    START = 'start'
    RELAUNCH = 'relaunch'
    STARTED = 'started'
    STOP = 'stop'
    FATAL = 'fatal'


@dataclasses.dataclass(frozen=True)
class Action:
    """What the caller must do now.

    :ivar do: a :class:`Do`.
    :ivar why: the reason (for START, RELAUNCH and STOP), or the message
        of the :class:`DnsmasqFailure` to raise (FATAL).
    :ivar notice: for a RELAUNCH that restarts a dnsmasq that stopped, a
        line for systemd's status; else None.
    """

    do: Do
    why: str = ''
    notice: typing.Optional[str] = None


NOTHING = Action(Do.NOTHING)
Done = dnsmasq.Done


class Supervisor:
    """What pxefilterd knows of dnsmasq, and what it does about it.

    :param managed: a start command is configured (pxefilterd starts
        dnsmasq); else it is started by someone else.
    :param observed: a pid file is known (:func:`dnsmasq.observe` can see
        whether dnsmasq runs).
    :param direct: dnsmasq is observed directly, as pxefilterd's child
        (:mod:`pxefilterd.child`): seen gone, it has exited (no pid file
        still to come), so a start seen gone is a failed start at once.
    :ivar state: a :class:`State`.
    :ivar starts: successful runs of the start command.
    :ivar detail: one line: what the last look at the pid file showed.
    """

    def __init__(self, managed, observed, direct=False):
        self.managed = managed
        self.observed = observed
        self.direct = direct
        self.state = State.STOPPED
        self.starts = 0
        self.detail = ''
        self.due = None          # BACKOFF: when the next start is due
        self._started_at = None  # when the last start command succeeded
        self._why = ''           # why the start in flight was asked for
        self._unsure = False     # the last look could not read the pid file
        self._backoff = backoff.Backoff(cap=_START_BACKOFF_MAX)

    # -- what is derived from the state ------------------------------------

    @property
    def serving(self):
        """dnsmasq may be reading the hostsdir now."""
        return self.state in _SERVING

    @property
    def running(self):
        """dnsmasq runs: seen, or assumed (started and not seen gone)."""
        return self.state in _RUNNING

    @property
    def status(self):
        """One word or three, for status lines and the metrics' label."""
        if self._unsure and self.state in _LOOKING:
            return _ASSUMED if self.running else 'unknown'
        return STATUS[self.state]

    @property
    def failures(self):
        """Failed starts in a row."""
        return self._backoff.failures

    # -- inputs ------------------------------------------------------------

    def begin(self, why):
        """The first sync is done: dnsmasq may be started now."""
        return self._start(why)

    def adopt(self):
        """No start command: dnsmasq is started by someone else."""
        self.state = State.ELSEWHERE if self.observed else State.UNOBSERVED

    def stopped(self):
        """The exit path ran the stop command."""
        self.state = State.STOPPED
        self._unsure = False

    def step(self, now, seen, done=None, guard_exit=None):
        """Take in what happened; return the :class:`Action` to take now.

        :param now: the monotonic clock.
        :param seen: a :class:`pxefilterd.dnsmasq.Observation` (looked at
            only in the states that expect one).
        :param done: a :class:`Done` once the start command in flight has
            ended, else None.
        :param guard_exit: the exit status of a guard process that has
            died since the last step, else None.
        """
        if guard_exit in (guard.EXIT_TERMINATED, guard.EXIT_ORPHANED):
            action = self._guard_stopped_it()
            if action is not None:
                return action
        if self.state is State.STARTING:
            if done is None:
                return NOTHING
            if done.error is not None:
                return self._failed(now, done.error)
            action = self._started(now)
            if self.state is State.LAUNCHED:
                # NOTHING (it is young), or a child seen gone: a failed
                # start, FATAL at the last attempt
                then = self._look(now, seen)
                if then.do is Do.FATAL:
                    return then
            else:
                self.detail = seen.detail
            return action
        if self.state is State.BACKOFF:
            if now >= self.due:
                return self._start('retry', relaunch=True)
            return NOTHING
        if self.state in _LOOKING:
            return self._look(now, seen)
        if self.state is State.UNOBSERVED:
            self.detail = seen.detail   # (says why it cannot be seen)
        return NOTHING

    # -- transitions -------------------------------------------------------

    def _start(self, why, relaunch=False):
        self.state = State.STARTING
        self.due = None
        self._why = why
        return Action(Do.RELAUNCH if relaunch else Do.START, why)

    def _restart(self, why):
        LOG.error('dnsmasq is not running (%s); re-asserting the hostsdir and '
                  'starting it again', why)
        action = self._start(why, relaunch=True)
        return dataclasses.replace(
            action, notice='dnsmasq not running (%s); restarting' % why)

    def _started(self, now):
        self._started_at = now
        self.starts += 1
        if self.observed:
            self.state = State.LAUNCHED
        else:
            self.state = State.UNOBSERVED
            self._backoff.succeeded()    # nothing more to wait for
        if self.starts > 1:
            LOG.warning('dnsmasq started again (%s)', self._why)
        return Action(Do.STARTED, self._why)

    def _failed(self, now, detail, then=NOTHING):
        """A failed start: BACKOFF (and ``then``), or FATAL."""
        failures = self._backoff.failures + 1
        if failures >= START_ATTEMPTS:
            self._backoff.failures = failures
            return Action(Do.FATAL, 'dnsmasq could not be started %d times in '
                          'a row; giving up (systemd restarts pxefilterd and '
                          'dnsmasq together): %s' % (failures, detail))
        delay = self._backoff.failed()
        LOG.error('dnsmasq start %d of %d failed; trying again in %.0f s: %s',
                  failures, START_ATTEMPTS, delay, detail)
        self.state = State.BACKOFF
        self.due = now + delay
        return then

    def _look(self, now, seen):
        """What the pid file shows, in a state that expects a look."""
        self.detail = seen.detail
        self._unsure = seen.state == dnsmasq.UNKNOWN
        if self._unsure:
            return NOTHING
        young = (self._started_at is not None
                 and now - self._started_at < START_GRACE)
        if seen.state == dnsmasq.RUNNING:
            self.state = State.RUNNING
            if not young:
                self._backoff.succeeded()   # it stayed up: a good start
            return NOTHING
        if not self.managed:
            if self.state is not State.GONE:
                LOG.error('dnsmasq (started elsewhere) is not running: %s; '
                          'pxefilterd keeps the hostsdir right for when it '
                          'is back', seen.detail)
            self.state = State.GONE
            return NOTHING
        if self.state is State.LAUNCHED and self.direct:
            # waitpid, not a pid file: it has exited, nothing to wait for
            # and nothing left running to stop
            return self._failed(now, 'dnsmasq exited %.1f s after it was '
                                'started: %s' % (now - self._started_at,
                                                 seen.detail))
        if self.state is State.LAUNCHED:
            if young:
                return NOTHING      # give it the time to write its pid file
            # Started, but never showed up.  Whatever the start command
            # left running (a dnsmasq slow to write its pid file, or one
            # writing it elsewhere) is stopped before the next try.
            return self._failed(
                now, 'dnsmasq did not run %.0f s after its start command: %s'
                % (START_GRACE, seen.detail),
                then=Action(Do.STOP, 'dnsmasq did not show up'))
        if young:
            # died soon after it was started: a failed start (with backoff,
            # and fatal after START_ATTEMPTS), not a fresh crash
            return self._failed(now, 'dnsmasq exited %.1f s after it was '
                                'started: %s' % (now - self._started_at,
                                                 seen.detail))
        return self._restart(seen.detail)

    def _guard_stopped_it(self):
        """The guard was signalled and ran the stop command: dnsmasq is down
        under us.  Returns None when the other inputs decide."""
        if not self.managed:
            return Action(Do.FATAL, 'the guard was signalled and stopped '
                          'dnsmasq, which pxefilterd cannot start (no '
                          'dnsmasq_start_command)')
        if self.observed:
            # The look sees it gone (or already started again) and acts on
            # that: a start here could run while a restart already brought
            # it back.
            return None
        if self.state in (State.BACKOFF, State.UNOBSERVED):
            return self._restart('the guard was signalled and stopped it')
        return None
