"""The daemon's lifecycle and loop.

    lock -> guard -> purge (or load) -> fail-closed state -> first sync
    (a full listing and an inspection answer) -> start dnsmasq -> loop ->
    stop dnsmasq

The loop reads like this::

    events from the ironic threads -> view -> policy.decide(view) -> writer

Invariant: dnsmasq started by us only ever serves a hostsdir that reflects a
successful sync, or the fail-closed state (everything denied).  Every exit
path logs why and returns an exit status.

Threads: ironic is only ever asked by the poller and lister threads
(:mod:`pxefilterd.feed`); they hand events over through a queue.  The
thread that calls :meth:`Service.run` owns the view and the hostsdir, pings
the systemd watchdog and handles signals (whose handlers only set flags):
nothing it does waits on ironic.
"""

import dataclasses
import logging
import os
import queue
import threading
import time

from pxefilterd import commands
from pxefilterd import control
from pxefilterd import decisions
from pxefilterd import dnsmasq as dnsmasq_mod
from pxefilterd import explain as explain_mod
from pxefilterd import intake
from pxefilterd import helpers
from pxefilterd import hostsdir as hostsdir_mod
from pxefilterd import macs
from pxefilterd import policy
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
    port_fetches_per_poll: int = 10


@dataclasses.dataclass
class Stats:
    """Counters for status lines and metrics."""

    allowed: int = 0
    denied: int = 0
    unknown: str = 'deny'
    last_sync: float = 0.0       # wall clock of the last full listing
    last_sync_duration: float = 0.0
    last_contact: float = 0.0    # wall clock of the last complete poll
    syncs: int = 0
    api_errors: int = 0
    heals: int = 0
    dnsmasq_running: bool = False
    dnsmasq_state: str = 'stopped'     # the supervisor's status
    dnsmasq_detail: str = ''
    dnsmasq_starts: int = 0
    failed_closed: bool = False
    ports: int = 0
    inspected: int = 0


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
    :param control_factory: callable(ask) returning a started-able
        control socket server (see :mod:`pxefilterd.control`), or None.
    """

    def __init__(self, settings, client, store, cmds, guard_factory=None,
                 watcher_factory=None, notifier=None, reload_settings=None,
                 clock=time.monotonic, pid_file=None, control_factory=None):
        self.settings = settings
        self.client = client
        self.store = store
        self.cmds = cmds
        self._stats = Stats()
        self.view = view_mod.IronicView()
        self.runner = dnsmasq_mod.CommandRunner(wake=self.wake)
        self.pid_file = pid_file
        self.supervisor = supervisor.Supervisor(managed=bool(cmds.start),
                                                observed=bool(pid_file))
        self._start = None           # the start command's future
        self.writer = writer_mod.Writer(
            store, cmds.reload, lambda: self.settings, clock,
            runner=self.runner, serving=lambda: self.supervisor.serving)
        self._notifier = notifier
        self._reload_settings = reload_settings
        self._clock = clock
        self.sync_observers = []   # callables(duration), e.g. metrics
        self.intake = intake.Intake(client, lambda: self.settings, clock,
                                    self.wake, self.sync_observers)
        self.helpers = helpers.Helpers(store, cmds, self.wake, self.ask,
                                       guard_factory, watcher_factory,
                                       control_factory)
        self.wakeup = wakeup.WakeUp()
        self._stop_reason = None
        self._hup = False
        self._ready = False
        self._next_compaction = float('inf')
        self._inspected = frozenset()
        self.decisions = decisions.DecisionLog()
        self._requests = queue.SimpleQueue()

    @property
    def stats(self):
        """The counters now, as a :class:`Stats` (the dnsmasq ones are the
        supervisor's)."""
        sup, feeds = self.supervisor, self.intake
        return dataclasses.replace(
            self._stats, dnsmasq_running=sup.running,
            dnsmasq_state=sup.status, dnsmasq_detail=sup.detail,
            dnsmasq_starts=sup.starts, heals=self.helpers.heals,
            syncs=feeds.syncs,
            last_sync=feeds.last_sync,
            last_sync_duration=feeds.last_sync_duration,
            last_contact=feeds.last_contact, api_errors=feeds.api_errors,
            failed_closed=feeds.failed_closed)

    # -- signals (any thread) ------------------------------------------------

    def request_stop(self, reason, from_signal=False):
        """Ask the loop to exit cleanly (exit status 0).

        ``from_signal``: called by a signal handler (see
        :mod:`pxefilterd.wakeup`).
        """
        if self._stop_reason is None:
            self._stop_reason = reason
        self._wake_up(from_signal)

    def request_reload(self, from_signal=False):
        self._hup = True
        self._wake_up(from_signal)

    def _wake_up(self, from_signal):
        if from_signal:
            self.wakeup.from_signal()
        else:
            self.wakeup.set()

    def prepare_for_signals(self):
        """Start the signal relay now, in a normal context."""
        self.wakeup.prepare_for_signals()

    def wake(self):
        self.wakeup.set()

    def ask(self, request, timeout=control.CLIENT_TIMEOUT - 1.0):
        """Have the loop thread answer a control request; wait for it.

        Called by the control socket's thread.  The loop answers at its
        next wake-up (at once: this wakes it).
        """
        slot = [None, threading.Event()]
        self._requests.put((request, slot))
        self.wakeup.set()
        if not slot[1].wait(timeout):
            return {'ok': False, 'error': 'the daemon did not answer within '
                    '%.0f s' % timeout}
        return slot[0]

    # -- lifecycle ------------------------------------------------------------

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
        # (what is configured now: tests and tools may set them after
        # construction)
        self.supervisor = supervisor.Supervisor(
            managed=bool(self.cmds.start), observed=bool(self.pid_file))
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
        external = not self.cmds.start
        self._write(policy.fail_closed(self.store.cached()))
        if external:
            if self.settings.purge and self.cmds.reload:
                # dnsmasq still holds every record it read from purged
                # files, and an exact-MAC allow beats the wildcard deny:
                # drop them now, not after the first sync.
                self._run_now(self.cmds.reload)
            # Started elsewhere: it serves, so bursts are paced.
            self.supervisor.adopt()
            self.writer.dnsmasq_started()
        LOG.info('Hostsdir in the fail-closed state; waiting for the first '
                 'successful sync before dnsmasq is started')
        self.intake.start()
        if not self._first_sync():
            return EXIT_OK, self._stop_reason
        self.helpers.arm()
        self.helpers.start_watcher()
        if external:
            self._become_ready()
        else:
            self._act(self.supervisor.begin('the first sync is done'))
        return self._loop()

    def _become_ready(self):
        self._ready = True
        if self._notifier is not None:
            self._notifier.ready(self.status_line())
        LOG.info('Ready: %s', self.status_line())

    def _run_now(self, command):
        """Run ``command`` in the command thread and wait for it, pinging
        the watchdog; raise its CommandError."""
        future = self.runner.submit(command)
        while not future.done():
            if self._notifier is not None:
                self._notifier.watchdog()
            self.wakeup.wait(_MAX_TICK)
            self.wakeup.clear()
        return future.result()

    # -- dnsmasq: see pxefilterd.supervisor -----------------------------

    def _supervise(self, guard_exit=None):
        """Tell the supervisor what happened to dnsmasq; do what it says.

        :raises DnsmasqFailure: dnsmasq cannot be kept serving.
        """
        done = None
        if self._start is not None and self._start.done():
            exc, self._start = self._start.exception(), None
            done = supervisor.Done(None if exc is None else str(exc))
        seen = dnsmasq_mod.observe(self.pid_file)
        self._act(self.supervisor.step(self._clock(), seen, done,
                                       guard_exit))

    def _act(self, action):
        if action.do is Do.FATAL:
            raise DnsmasqFailure(action.why)
        if action.do is Do.STOP:
            self._stop_quietly(action.why)
        elif action.do is Do.STARTED:
            self.writer.dnsmasq_started()
            if not self._ready:
                self._become_ready()
        elif action.do in (Do.START, Do.RELAUNCH):
            if action.notice and self._notifier is not None:
                self._notifier.status(action.notice)
            if action.do is Do.RELAUNCH:
                self.helpers.rescan()   # it reads every file when it starts
            self._start = self.runner.submit(self.cmds.start)

    def _stop_quietly(self, why):
        """Have the stop command run (in the command thread); a failure is
        logged, not raised."""
        if not self.cmds.stop:
            return

        def done(future):
            exc = future.exception()
            if exc is not None:
                LOG.warning('Stop command after "%s" failed: %s', why, exc)
        self.runner.submit(self.cmds.stop).add_done_callback(done)

    def _first_sync(self):
        """Wait for a listing and an inspection answer, then write them.

        Returns False if a stop was requested first.
        """
        while self._stop_reason is None:
            self.wakeup.clear()
            if self._notifier is not None:
                self._notifier.watchdog()
            self.intake.drain(self.view, self._ready)
            self._answer_requests()
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
        self._next_compaction = self._clock() + self._compaction_interval()
        while True:
            # Cleared before looking for work: a wake-up that arrives while
            # this iteration runs is kept for the next wait.
            self.wakeup.clear()
            if self._stop_reason is not None:
                return EXIT_OK, self._stop_reason
            if self._hup:
                self._hup = False
                self._reload()
            guard_exit = self.helpers.check()
            self.intake.check()
            if not self.runner.alive():
                raise RuntimeError('the dnsmasq command thread died')
            self._supervise(guard_exit)
            self.helpers.heal()
            self.intake.drain(self.view, self._ready)
            self.intake.check_stale()
            try:
                self._converge()
            except hostsdir_mod.TransientWriteError as exc:
                LOG.error('Could not write the hostsdir, retrying: %s', exc)
                self.wakeup.wait(1.0)
                continue
            self._maybe_compact()
            self._answer_requests()
            if self._notifier is not None:
                self._notifier.watchdog()
            timeout = min(self.writer.next_due(), _MAX_TICK)
            self.wakeup.wait(max(0.0, timeout))

    def _compaction_interval(self):
        interval = self.settings.compaction_interval
        if interval > 0 and self.cmds.reload:
            return interval
        return float('inf')

    # -- deciding and writing ---------------------------------------------

    def _desired(self):
        if self.intake.failed_closed:
            return policy.fail_closed(self.store.cached())
        return policy.decide(self.view.snapshot(), self.settings.options,
                             self.store.cached())

    def _converge(self):
        desired = self._desired()
        inspected = policy.inspected_nodes(self.view.snapshot(),
                                           self.settings.options)
        changed = inspected ^ self._inspected
        self._inspected = inspected
        notes, self.view.notes = self.view.notes, {}
        self.decisions.record(desired, self.reason, notes)
        written = self._write(desired)
        if changed and self._ready:
            LOG.info('Inspection changed for %d node(s): %d file(s) written',
                     len(changed), written)

    def reason(self, key):
        """Return the :class:`policy.Reason` for a MAC or the wildcard."""
        if self.stats.failed_closed:
            return policy.Reason(
                policy.Action.DENY, 'fail-closed',
                'ironic has not answered for max_stale_seconds: every MAC '
                'is denied', option='[pxe_filter] max_stale_seconds')
        if key == macs.WILDCARD:
            return policy.unknown_reason(self._inspected,
                                         self.settings.options)
        return policy.explain(key, self.view.snapshot(),
                              self.settings.options)

    def _write(self, desired):
        written = self.writer.converge(desired, self.view.macs)
        allowed, denied = desired.counts()
        self._stats.allowed, self._stats.denied = allowed, denied
        self._stats.unknown = desired.unknown.value
        self._stats.ports = len(self.view.ports)
        self._stats.inspected = len(self._inspected)
        if written:
            LOG.info('Wrote %d file(s): %s', written, self.status_line())
            if self._notifier is not None:
                self._notifier.status(self.status_line())
        return written

    def _maybe_compact(self):
        now = self._clock()
        if now < self._next_compaction or self.intake.failed_closed:
            return
        self._next_compaction = now + self._compaction_interval()
        self.writer.compact(self._desired(), self.view.macs)

    # -- control requests (pxefilterd-ctl explain / status) --------------

    def _answer_requests(self):
        while True:
            try:
                request, slot = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                slot[0] = self.answer(request)
            except Exception as exc:
                LOG.exception('Control request %r failed', request)
                slot[0] = {'ok': False, 'error': 'internal error: %r' % (exc,)}
            slot[1].set()

    def answer(self, request):
        """Answer one control request (a dict); return a JSON-able dict."""
        command = request.get('command')
        if command == 'status':
            return dict(self.status(), ok=True)
        if command == 'explain':
            raw = request.get('key')
            key = (macs.WILDCARD if raw in (macs.WILDCARD, 'unknown')
                   else macs.normalize_key(raw))
            if key is None:
                return {'ok': False, 'error': 'not a MAC address or client '
                        'id: %.60r' % (raw,)}
            return dict(self.explain(key), ok=True)
        return {'ok': False, 'error': 'unknown command %.40r' % (command,)}

    def status(self):
        """What the daemon knows now, as plain values."""
        s = self.stats
        return {
            'pid': os.getpid(),
            'ready': self._ready,
            'allowed': s.allowed, 'denied': s.denied, 'unknown': s.unknown,
            'ports': s.ports, 'inspected_nodes': s.inspected,
            'failed_closed': s.failed_closed,
            'last_contact': s.last_contact or None,
            'last_listing': s.last_sync or None,
            'api_errors': s.api_errors, 'heals': s.heals,
            'dnsmasq': {'state': s.dnsmasq_state,
                        'detail': s.dnsmasq_detail,
                        'starts': s.dnsmasq_starts},
            'pending_writes': self.writer.pending,
            'reload_failures': self.writer.reload_failures,
        }

    def explain(self, key):
        """Why ``key`` (a normalised MAC or client id, or the wildcard) gets
        its answer.

        Returns the decision and its reason, the ironic facts behind it,
        what pxefilterd wrote for it, and when it last changed.
        """
        reason = self.reason(key)
        facts = explain_mod.ironic_facts(
            self.view.port_of(key), self.view.nodes, len(self._inspected),
            self.settings.options)
        written = self.store.index.get(key)
        record = hostsdir_mod.file_name(key) if written else None
        if written is None and key in self.store.base:
            written, record = self.store.base[key], 'base hosts file'
        # an unknown MAC follows the unknown policy: its last change
        last = self.decisions.last_change(
            key, macs.WILDCARD if facts.get('port') is None else None)
        return {
            'key': key,
            'action': reason.action.value,
            'rule': reason.rule,
            'text': reason.text,
            'option': reason.option,
            'ironic': facts,
            'written': written.value if written else None,
            'record': record,
            'last_change': last,
            'failed_closed': self.stats.failed_closed,
            'last_contact': self.stats.last_contact or None,
            'dnsmasq': {'state': self.stats.dnsmasq_state,
                        'detail': self.stats.dnsmasq_detail},
            'pid': os.getpid(),
        }

    def status_line(self):
        s = self.stats
        return ('%d allowed, %d denied, unknown MACs %s%s' % (
            s.allowed, s.denied, s.unknown,
            ', FAILED CLOSED' if s.failed_closed else ''))

    # -- helpers: guard, watcher, reload --------------------------------------

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
            self._next_compaction = (self._clock()
                                     + self._compaction_interval())
        self.intake.kick()

    # -- exit ---------------------------------------------------------------

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
            if self._start is not None:
                # A start still running could bring dnsmasq up after the
                # stop below: let it end first (it is killed at its
                # timeout).
                try:
                    self._start.exception(timeout=self.cmds.start.timeout + 1)
                except Exception:
                    pass
            # Here, not in the command thread: nothing is left to keep
            # right, and a reload still running there must not delay it.
            try:
                self.cmds.stop.run()
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
