"""The daemon's lifecycle and loop.

    lock -> guard -> purge (or load) -> fail-closed state -> first sync
    (a full listing and an inspection answer) -> start dnsmasq -> loop ->
    stop dnsmasq

Each turn of the loop (the rooms, each owning what it changes, are
described in doc/source/design.md)::

    helpers.check()                        guard, watcher, control socket
    supervisor.step() -> action            dnsmasq: pxefilterd.supervisor
    helpers.heal()                         undo tampering with the hostsdir
    intake.drain() -> view                 events from the ironic threads
    policy.decide(view) -> writer.converge()
    compaction, report.answer_pending(), watchdog ping, wait

Invariant: dnsmasq started by us only ever serves a hostsdir that reflects a
successful sync, or the fail-closed state (everything denied).  Every exit
path logs why and returns an exit status.  The thread that calls
:meth:`Service.run` owns the view and the hostsdir and pings the systemd
watchdog; ironic is asked by the feed threads only, commands run in the
command thread: nothing the loop does waits on either.
"""

import dataclasses
import logging
import time

from pxefilterd import child as child_mod
from pxefilterd import commands
from pxefilterd import decisions
from pxefilterd import dnsmasq as dnsmasq_mod
from pxefilterd import helpers
from pxefilterd import hostsdir as hostsdir_mod
from pxefilterd import intake
from pxefilterd import policy
from pxefilterd import report
from pxefilterd import supervisor
from pxefilterd import view as view_mod
from pxefilterd import wakeup
from pxefilterd import writer as writer_mod

LOG = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78   # EX_CONFIG: systemd's RestartPreventExitStatus

# Longest sleep of the loop: watchdog pings keep flowing, and a dnsmasq
# that died is noticed within ~1 s.
_MAX_TICK = 1.0
Do = supervisor.Do
DnsmasqFailure = supervisor.DnsmasqFailure
Stats = report.Stats


@dataclasses.dataclass
class Settings:
    """The tunables the service reads; replaced as a whole on SIGHUP."""

    sync_period: float = 900.0
    poll_interval: float = 1.0
    idle_poll_interval: float = 1.5
    options: policy.Options = policy.Options()
    max_stale_seconds: float = 0.0
    purge: bool = True
    lock_wait: float = 10.0
    max_burst: int = 8000
    burst_rate: int = 2000
    compaction_interval: float = 3600.0   # seconds; 0 = never
    compaction_threshold: int = 1000      # stale sparse records; 0 = never
    port_fetches_per_poll: int = 10


class Service:
    """Wires ironic, the view, the hostsdir writer and dnsmasq together.

    :param client: an :class:`pxefilterd.ironic.IronicClient` (or anything
        with the same methods); only the feed threads call it.
    :param store: a :class:`pxefilterd.hostsdir.HostsDir`.
    :param cmds: a :class:`pxefilterd.commands.Commands`.
    :param guard_factory: callable(stop Command, lock_fd) returning a
        guard (see :mod:`pxefilterd.guard`), or None for no guard.
    :param watcher_factory: callable(path, wake) returning a started-able
        watcher (see :mod:`pxefilterd.watcher`), or None.
    :param reload_settings: callable returning new Settings on SIGHUP.
    :param pid_file: dnsmasq's pid file, or None: it cannot be observed.
    :param control_factory: callable(ask) returning a started-able
        control socket server (see :mod:`pxefilterd.control`), or None.
    :param child: a :class:`pxefilterd.child.Child`: dnsmasq is run as a
        child process (then ``cmds`` is its
        :class:`pxefilterd.child.ChildCommands`, and ``pid_file`` None).
    """

    def __init__(self, settings, client, store, cmds, guard_factory=None,
                 watcher_factory=None, notifier=None, reload_settings=None,
                 clock=time.monotonic, pid_file=None, control_factory=None,
                 child=None):
        self.settings = settings
        self.child = child
        self.store = store
        self.cmds = cmds
        self.pid_file = pid_file
        self._notifier = notifier
        self._reload_settings = reload_settings
        self._clock = clock
        self.wakeup = wakeup.WakeUp()
        self.view = view_mod.IronicView()
        self.decisions = decisions.DecisionLog()
        self.sync_observers = []   # callables(duration), e.g. metrics
        self.report = report.Report(self)
        self.intake = intake.Intake(client, lambda: self.settings, clock,
                                    self.wake, self.sync_observers)
        self.helpers = helpers.Helpers(
            store, cmds, self.wake, self.report.ask,
            lambda why: self.writer.forget(why), guard_factory,
            watcher_factory, control_factory)
        self.runner = dnsmasq_mod.CommandRunner(wake=self.wake)
        self.supervisor, self.dnsmasq = self._dnsmasq_rooms()
        if child is not None:
            child.observers.append(self.helpers.tell_child)
        # A child's reload is a signal, sent by the loop thread (see
        # pxefilterd.child: one thread acts on the child).
        self.writer = writer_mod.Writer(
            store, cmds.reload, lambda: self.settings, clock,
            runner=(self.runner if child is None
                    else dnsmasq_mod.Immediate()),
            serving=lambda: self.supervisor.serving)
        self.ready = False                # the first start (or sync) is done
        self.inspected = frozenset()      # nodes whose ports may boot
        self.tally = (0, 0, 'deny')       # allowed, denied, unknown MACs
        self._compaction_due = None
        self._last_desired = None

    @property
    def stats(self):
        """The counters now, a :class:`pxefilterd.report.Stats`."""
        return self.report.stats

    # -- signals and wake-ups (any thread) -------------------------------

    def request_stop(self, reason, from_signal=False):
        """Ask the loop to exit cleanly (exit status 0); ``from_signal``:
        from a signal handler (see :mod:`pxefilterd.wakeup`)."""
        self.wakeup.request_stop(reason, from_signal)

    def request_reload(self, from_signal=False):
        self.wakeup.request_reload(from_signal)

    def prepare_for_signals(self):
        """Start the signal relay now, in a normal context."""
        self.wakeup.prepare_for_signals()

    def wake(self):
        self.wakeup.set()

    # -- lifecycle ---------------------------------------------------------

    def run(self):
        """Run until stopped; return the exit status.  Never raises."""
        try:
            self.store.lock(wait=self.settings.lock_wait)
        except hostsdir_mod.HostsDirError as exc:
            LOG.error('Cannot start: %s', exc)
            return EXIT_FAILURE
        except OSError as exc:
            LOG.error('Cannot start: cannot lock %s: %s', self.store.path,
                      exc.strerror or exc)
            return EXIT_FAILURE
        code, reason = EXIT_FAILURE, 'unexpected error'
        try:
            code, reason = self._run_locked()
        except hostsdir_mod.HostsDirError as exc:
            code, reason = EXIT_FAILURE, 'hostsdir failure: %s' % exc
        except (commands.CommandError, DnsmasqFailure) as exc:
            code, reason = EXIT_FAILURE, str(exc)
        except Exception as exc:
            LOG.exception('Unexpected error')
            code, reason = EXIT_FAILURE, 'unexpected error: %r' % (exc,)
        finally:
            self._shutdown(reason, code)
        return code

    def _run_locked(self):
        # (from cmds and pid_file as they are now, not at construction)
        self.supervisor, self.dnsmasq = self._dnsmasq_rooms()
        self.helpers.start_guard()
        self.helpers.start_control()
        if self.settings.purge:
            removed = self.store.purge()
            LOG.info('Purged %d file(s) from %s', removed, self.store.path)
        else:
            foreign = self.store.load()
            LOG.info('Indexed %d existing file(s) in %s',
                     len(self.store.index), self.store.path)
            for name in foreign:
                LOG.warning('Foreign entry %s in the hostsdir is not ours; '
                            'it is left in place', name)
        if self.store.base_path:
            # Never trust a base file a previous run left behind.
            self.store.write_base({})
        self._write(policy.fail_closed(self.store.cached()))
        if not self.supervisor.managed:
            if self.settings.purge and self.cmds.reload:
                self._reload_after_purge()
            # Started elsewhere: it serves, so bursts are paced.
            self.supervisor.adopt()
            self.writer.dnsmasq_started()
        LOG.info('Hostsdir in the fail-closed state; waiting for the first '
                 'successful sync before dnsmasq is started')
        self.intake.start()
        if not self._first_sync():
            return EXIT_OK, self.wakeup.stop_reason
        self.helpers.arm()
        self.helpers.start_watcher()
        if self.supervisor.managed:
            self._act(self.supervisor.begin('the first sync is done'))
        else:
            self._become_ready()
        return self._loop()

    def _reload_after_purge(self):
        """A dnsmasq started elsewhere still holds every record it read
        from purged files, and an exact-MAC allow beats the wildcard deny:
        drop them now, not after the first sync.  One seen not running
        holds none (e.g. a sidecar container not started yet): it reads
        the purged, fail-closed directory when it starts.

        :raises commands.CommandError: the reload failed.
        """
        seen, _ = self.dnsmasq.news()
        if seen.state == dnsmasq_mod.GONE:
            LOG.info('dnsmasq (started elsewhere) is not running (%s): '
                     'nothing to reload after the purge; it reads the '
                     'fail-closed hostsdir when it starts', seen.detail)
            return
        self.dnsmasq.run_now(self.cmds.reload, self._ping)

    def _dnsmasq_rooms(self):
        """The supervisor and the handle it acts through: a child dnsmasq
        is started and observed directly, else through the commands and
        the pid file."""
        if self.child is not None:
            return (supervisor.Supervisor(managed=True, observed=True,
                                          direct=True),
                    child_mod.ChildHandle(self.child))
        return (supervisor.Supervisor(managed=bool(self.cmds.start),
                                      observed=bool(self.pid_file)),
                dnsmasq_mod.Handle(self.cmds, self.runner, self.pid_file))

    def _first_sync(self):
        """Wait for a listing and an inspection answer, then write them.

        Returns False if a stop was requested first.
        """
        while self.wakeup.stop_reason is None:
            self.wakeup.clear()
            self._ping()
            self.intake.drain(self.view, self.ready)
            self.report.answer_pending()
            if self.view.complete:
                try:
                    self._converge()
                    self.intake.first_sync_done()
                    return True
                except hostsdir_mod.TransientWriteError as exc:
                    LOG.error('First sync could not write the hostsdir; '
                              'retrying in 1 s: %s', exc)
            self.wakeup.wait(1.0)
        return False

    def _loop(self):
        while True:
            # Cleared before looking for work: a wake-up that arrives while
            # this iteration runs is kept for the next wait.
            self.wakeup.clear()
            if self.wakeup.stop_reason is not None:
                return EXIT_OK, self.wakeup.stop_reason
            if self.wakeup.take_reload():
                self._reload()
            guard_exit = self.helpers.check()
            self.intake.check()
            if not self.runner.alive():
                raise RuntimeError('the dnsmasq command thread died')
            self._supervise(guard_exit)
            self.helpers.heal()
            self.intake.drain(self.view, self.ready)
            self.intake.check_stale()
            try:
                self._converge()
            except hostsdir_mod.TransientWriteError as exc:
                LOG.error('Could not write the hostsdir, retrying: %s', exc)
                self.wakeup.wait(1.0)
                continue
            self._maybe_compact()
            self.report.answer_pending()
            self._ping()
            timeout = min(self.writer.next_due(), _MAX_TICK)
            self.wakeup.wait(max(0.0, timeout))

    def _become_ready(self):
        self.ready = True
        if self._notifier is not None:
            self._notifier.ready(self.report.status_line())
        LOG.info('Ready: %s', self.report.status_line())

    def _ping(self):
        if self._notifier is not None:
            self._notifier.watchdog()

    # -- dnsmasq: the supervisor decides, the service runs the commands --

    def _supervise(self, guard_exit=None):
        """Tell the supervisor what happened to dnsmasq; do what it says."""
        seen, done = self.dnsmasq.news()
        self._act(self.supervisor.step(self._clock(), seen, done,
                                       guard_exit))

    def _act(self, action):
        """Carry out a :class:`pxefilterd.supervisor.Action`.

        :raises DnsmasqFailure: dnsmasq cannot be kept serving.
        """
        if action.do is Do.FATAL:
            raise DnsmasqFailure(action.why)
        if action.do is Do.STARTED:
            self.writer.dnsmasq_started()
            if not self.ready:
                self._become_ready()
        elif action.do in (Do.START, Do.RELAUNCH):
            if action.notice and self._notifier is not None:
                self._notifier.status(action.notice)
            if action.do is Do.RELAUNCH:
                self.helpers.rescan()   # it reads every file when it starts
            self.dnsmasq.start()
        elif action.do is Do.STOP:
            self.dnsmasq.stop_quietly(action.why)

    # -- deciding and writing ----------------------------------------------

    def _desired(self):
        if self.intake.failed_closed:
            return policy.fail_closed(self.store.cached())
        return policy.decide(self.view.snapshot(), self.settings.options,
                             self.store.cached())

    def _converge(self):
        desired = self._last_desired = self._desired()
        inspected = policy.inspected_nodes(self.view.snapshot(),
                                           self.settings.options)
        changed = inspected ^ self.inspected
        self.inspected = inspected
        notes, self.view.notes = self.view.notes, {}
        self.decisions.record(desired, self.report.reason, notes)
        written = self._write(desired)
        if changed and self.ready:
            LOG.info('Inspection changed for %d node(s): %d file(s) written',
                     len(changed), written)

    def _write(self, desired):
        written = self.writer.converge(desired, self.view.macs)
        self.tally = desired.counts() + (desired.unknown.value,)
        if written:
            line = self.report.status_line()
            LOG.info('Wrote %d file(s): %s', written, line)
            if self._notifier is not None:
                self._notifier.status(line)
        return written

    def _maybe_compact(self):
        """See :meth:`pxefilterd.writer.Writer.compact`: every
        ``compaction_interval``, and with sparse records as soon as
        ``compaction_threshold`` records are stale (each node that leaves
        inspection leaves its deny records behind)."""
        if not self.cmds.reload or self.intake.failed_closed:
            return
        interval = self.settings.compaction_interval
        now = self._clock()
        if interval > 0:
            if self._compaction_due is None:
                self._compaction_due = now + interval
            if now >= self._compaction_due:
                self._compaction_due = now + interval
                self.writer.compact(self._desired(), self.view.macs)
                return
        threshold = self.settings.compaction_threshold
        desired = self._last_desired
        if threshold > 0 and desired is not None and desired.sparse:
            self.writer.compact(desired, self.view.macs, threshold)

    def _reload(self):
        if self._reload_settings is None:
            return
        try:
            new = self._reload_settings()
        except Exception as exc:
            LOG.error('SIGHUP: configuration not reloaded, keeping the '
                      'current one: %s', exc)
            return
        LOG.info('SIGHUP: configuration reloaded (sync_period=%s, '
                 'deny_unknown_macs=%s, auto_discovery=%s); applied now',
                 new.sync_period, new.options.deny_unknown_macs,
                 new.options.auto_discovery)
        old, self.settings = self.settings, new
        if old.compaction_interval != new.compaction_interval:
            self._compaction_due = None     # counted from now
        self.intake.kick()

    # -- exit ----------------------------------------------------------------

    def threads_alive(self):
        """True while a feed thread or the command thread still runs (e.g.
        waiting on ironic, or on a command until its timeout)."""
        return self.intake.alive() or self.runner.alive()

    def _shutdown(self, reason, code):
        """Stop dnsmasq first, then everything else; never raises.

        Each step is guarded on its own: a failure in one (e.g. the watcher
        of a vanished directory) must not skip the stop command.  Nothing
        here waits for ironic: the feed threads are told to stop and left
        behind (daemon threads) if a request holds them.
        """
        stopped = not self.helpers.armed
        if self.helpers.armed:
            try:
                self.dnsmasq.stop_now()
                stopped = True
            except commands.CommandError as exc:
                LOG.error('Could not stop dnsmasq: %s', exc)
            self.supervisor.stopped()
        self.runner.shutdown()
        self.intake.stop()
        self.helpers.stop()
        try:
            if self._notifier is not None:
                self._notifier.stopping(reason or '')
        except Exception:
            LOG.exception('Error during shutdown (ignored)')
        self.helpers.release_guard(stopped, wait=self.cmds.stop.timeout + 5)
        self.store.unlock()
        log = LOG.info if code == EXIT_OK else LOG.error
        log('pxefilterd exiting with status %d: %s', code, reason)
