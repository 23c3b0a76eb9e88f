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

from pxefilterd import backoff
from pxefilterd import commands
from pxefilterd import control
from pxefilterd import decisions
from pxefilterd import dnsmasq as dnsmasq_mod
from pxefilterd import explain as explain_mod
from pxefilterd import feed
from pxefilterd import guard as guard_mod
from pxefilterd import hostsdir as hostsdir_mod
from pxefilterd import macs
from pxefilterd import policy
from pxefilterd import view as view_mod
from pxefilterd import writer as writer_mod

LOG = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78   # EX_CONFIG: systemd's RestartPreventExitStatus

# Longest sleep of the loop: watchdog pings keep flowing, and a dnsmasq
# that died is noticed within ~1 s.
_MAX_TICK = 1.0
#: Starts of dnsmasq in a row that may fail (or leave no dnsmasq running
#: after START_GRACE) before pxefilterd gives up and exits.
START_ATTEMPTS = 5
#: Seconds a started dnsmasq has to show up in its pid file.
START_GRACE = 15.0
_START_BACKOFF_MAX = 16.0


class DnsmasqFailure(Exception):
    """dnsmasq cannot be kept serving: pxefilterd must exit."""


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
    dnsmasq_state: str = 'stopped'     # observed: see dnsmasq.observe
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
        self.stats = Stats()
        self.view = view_mod.IronicView()
        self.runner = dnsmasq_mod.CommandRunner(wake=self.wake)
        self.writer = writer_mod.Writer(store, cmds.reload,
                                        lambda: self.settings, clock,
                                        runner=self.runner)
        self.pid_file = pid_file
        self._start_job = None       # (future, why) of a start in flight
        self._start_failures = 0
        self._start_due = None       # when to try starting again
        self._started_at = None      # a start succeeded then
        self._guard_factory = guard_factory
        self._watcher_factory = watcher_factory
        self._notifier = notifier
        self._reload_settings = reload_settings
        self._clock = clock
        self.sync_observers = []   # callables(duration), e.g. metrics
        self._events = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop_reason = None
        self._hup = False
        self._guard = None
        self._watcher = None
        self._armed = False
        self._ready = False
        self._last_contact = None
        self._next_compaction = float('inf')
        self._inspected = frozenset()
        self.decisions = decisions.DecisionLog()
        self._threads = []
        self._seq = feed.Sequence()
        self._relay = None
        self._warned_empty = False
        self._control_factory = control_factory
        self._control = None
        self._requests = queue.SimpleQueue()

    # -- signals (any thread) ------------------------------------------------

    def request_stop(self, reason, from_signal=False):
        """Ask the loop to exit cleanly (exit status 0).

        ``from_signal``: called by a signal handler, which runs in the
        loop's own thread at any point -- possibly while that thread holds
        the wake-up Event's lock: the wake-up then goes through a pipe and
        a relay thread instead of taking the lock.
        """
        if self._stop_reason is None:
            self._stop_reason = reason
        self._wake_up(from_signal)

    def request_reload(self, from_signal=False):
        self._hup = True
        self._wake_up(from_signal)

    def _wake_up(self, from_signal):
        if not from_signal:
            self._wake.set()
            return
        if self._relay is None:
            self._relay_r, self._relay_w = os.pipe()
            self._relay = threading.Thread(target=self._relay_wakeups,
                                           name='signal-relay', daemon=True)
            self._relay.start()
        try:
            os.write(self._relay_w, b'!')
        except OSError:
            pass

    def _relay_wakeups(self):
        while os.read(self._relay_r, 64):
            self._wake.set()

    def prepare_for_signals(self):
        """Start the signal relay now, in a normal context."""
        self._wake_up(from_signal=True)

    def wake(self):
        self._wake.set()

    def _post(self, batch):
        """Called by the feed threads."""
        self._events.put(batch)
        self._wake.set()

    def ask(self, request, timeout=control.CLIENT_TIMEOUT - 1.0):
        """Have the loop thread answer a control request; wait for it.

        Called by the control socket's thread.  The loop answers at its
        next wake-up (at once: this wakes it).
        """
        slot = [None, threading.Event()]
        self._requests.put((request, slot))
        self._wake.set()
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
        if self._guard_factory is not None and self.cmds.stop:
            self._spawn_guard()
        self._start_control()
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
            self._dnsmasq_serving()
        LOG.info('Hostsdir in the fail-closed state; waiting for the first '
                 'successful sync before dnsmasq is started')
        self._start_threads()
        if not self._first_sync():
            return EXIT_OK, self._stop_reason
        self._armed = True
        if self._guard is not None:
            self._guard.arm()
        self._start_watcher()
        if self._watcher is not None:
            # Anything changed before the watch existed has no event.
            self._rescan()
        if external:
            self._become_ready()
        else:
            self._start_dnsmasq('the first sync is done')
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
            self._wake.wait(_MAX_TICK)
            self._wake.clear()
        return future.result()

    def _dnsmasq_serving(self):
        self.stats.dnsmasq_running = True
        self.writer.dnsmasq_started()

    # -- dnsmasq: starting it, and seeing that it runs -------------------

    def _start_dnsmasq(self, why):
        """Have the start command run (in the command thread)."""
        self.stats.dnsmasq_state = 'starting'
        self._start_due = None
        self._start_job = (self.runner.submit(self.cmds.start), why)

    def _start_failed(self, detail):
        self._start_failures += 1
        if self._start_failures >= START_ATTEMPTS:
            raise DnsmasqFailure(
                'dnsmasq could not be started %d times in a row; giving up '
                '(systemd restarts pxefilterd and dnsmasq together): %s'
                % (self._start_failures, detail))
        delay = backoff.delay(self._start_failures, _START_BACKOFF_MAX)
        LOG.error('dnsmasq start %d of %d failed; trying again in %.0f s: %s',
                  self._start_failures, START_ATTEMPTS, delay, detail)
        self.stats.dnsmasq_state = 'stopped'
        self._start_due = self._clock() + delay

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

    def _restart(self, why):
        """dnsmasq is not serving: put the hostsdir right, start it."""
        LOG.error('dnsmasq is not running (%s); re-asserting the hostsdir and '
                  'starting it again', why)
        if self._notifier is not None:
            self._notifier.status('dnsmasq not running (%s); restarting'
                                  % why)
        self._relaunch(why)

    def _relaunch(self, why):
        self.stats.dnsmasq_running = False
        self.writer.serving = False     # it reads every file when it starts
        self._rescan()
        self._start_dnsmasq(why)

    def _supervise(self):
        """Follow a start in flight, retry one that failed, and look at
        whether dnsmasq runs.

        :raises DnsmasqFailure: it cannot be started.
        """
        now = self._clock()
        if self._start_job is not None:
            future, why = self._start_job
            if not future.done():
                return
            self._start_job = None
            exc = future.exception()
            if exc is not None:
                self._start_failed(str(exc))
                return
            self._started_at = now
            self.stats.dnsmasq_starts += 1
            if not self.pid_file:
                self._start_failures = 0    # nothing more to wait for
            self._dnsmasq_serving()
            if not self._ready:
                self._become_ready()
            else:
                LOG.warning('dnsmasq started again (%s)', why)
        if self._start_due is not None:
            if now >= self._start_due:
                self._relaunch('retry')
            return
        seen = dnsmasq_mod.observe(self.pid_file)
        self.stats.dnsmasq_detail = seen.detail
        young = (self._started_at is not None
                 and now - self._started_at < START_GRACE)
        if seen.state == dnsmasq_mod.RUNNING:
            self.stats.dnsmasq_state = 'running'
            self.stats.dnsmasq_running = True
            if self._start_failures and not young:
                self._start_failures = 0    # it stayed up: a good start
            return
        if seen.state == dnsmasq_mod.UNKNOWN:
            self.stats.dnsmasq_state = ('unknown (assumed running)'
                                        if self.stats.dnsmasq_running
                                        else 'unknown')
            return
        external = not self.cmds.start
        if external:
            if self.stats.dnsmasq_state != 'gone':
                LOG.error('dnsmasq (started elsewhere) is not running: %s; '
                          'pxefilterd keeps the hostsdir right for when it '
                          'is back', seen.detail)
            self.stats.dnsmasq_state = 'gone'
            self.stats.dnsmasq_running = False
            return
        if young and self.stats.dnsmasq_state == 'starting':
            return      # give it the time to write its pid file
        if self.stats.dnsmasq_state == 'starting':
            # Started, but never showed up.  Whatever the start command
            # left running (a dnsmasq slow to write its pid file, or one
            # writing it elsewhere) is stopped before the next try: two
            # would fight over the port.  The command thread runs the stop
            # before that next start.
            self._stop_quietly('dnsmasq did not show up')
            self._start_failed('dnsmasq did not run %.0f s after its start '
                               'command: %s' % (START_GRACE, seen.detail))
            return
        self.stats.dnsmasq_state = 'gone'
        if young:
            # died soon after it was started: a failed start (with backoff,
            # and fatal after START_ATTEMPTS), not a fresh crash
            self._start_failed('dnsmasq exited %.1f s after it was started: '
                               '%s' % (now - self._started_at, seen.detail))
            return
        self._restart(seen.detail)

    def _start_threads(self):
        lister = feed.Lister(self.client, self._post, lambda: self.settings,
                             self._seq, self._clock)
        poller = feed.Poller(self.client, self._post, lambda: self.settings,
                             self._seq, self._clock,
                             request_listing=lister.kick)
        self._threads = [lister, poller]
        for thread in self._threads:
            thread.start()

    def _first_sync(self):
        """Wait for a listing and an inspection answer, then write them.

        Returns False if a stop was requested first.
        """
        while self._stop_reason is None:
            self._wake.clear()
            if self._notifier is not None:
                self._notifier.watchdog()
            self._drain()
            self._answer_requests()
            if self.view.complete:
                try:
                    self._converge()
                    if self._last_contact is None:
                        # (the inspection answer came ahead of its poll's
                        # end): max_stale_seconds counts from here
                        self._last_contact = self._clock()
                    return True
                except hostsdir_mod.TransientWriteError as exc:
                    LOG.error('First sync could not write the hostsdir; '
                              'retrying in 1 s: %s', exc)
            self._wake.wait(1.0)
        return False

    def _loop(self):
        self._next_compaction = self._clock() + self._compaction_interval()
        while True:
            # Cleared before looking for work: a wake-up that arrives while
            # this iteration runs is kept for the next wait.
            self._wake.clear()
            if self._stop_reason is not None:
                return EXIT_OK, self._stop_reason
            if self._hup:
                self._hup = False
                self._reload()
            self._check_helpers()
            self._supervise()
            self._heal()
            self._drain()
            self._check_stale()
            try:
                self._converge()
            except hostsdir_mod.TransientWriteError as exc:
                LOG.error('Could not write the hostsdir, retrying: %s', exc)
                self._wake.wait(1.0)
                continue
            self._maybe_compact()
            self._answer_requests()
            if self._notifier is not None:
                self._notifier.watchdog()
            timeout = min(self.writer.next_due(), _MAX_TICK)
            self._wake.wait(max(0.0, timeout))

    def _compaction_interval(self):
        interval = self.settings.compaction_interval
        if interval > 0 and self.cmds.reload:
            return interval
        return float('inf')

    # -- ironic events -----------------------------------------------------

    def _drain(self):
        """Apply every batch the feed threads posted to the view."""
        while True:
            try:
                batch = self._events.get_nowait()
            except queue.Empty:
                return
            for event in batch.events:
                if isinstance(event, view_mod.NodeGone):
                    count = len(self.view.ports_of(event.node))
                    LOG.info('Node %s is gone from ironic; forgetting it and '
                             'its %d port(s)', event.node, count)
                self.view.apply(event)
            if batch.error is not None:
                self._api_error(batch)
            if batch.source == 'poll' and batch.complete:
                self._contact()
            if batch.source == 'listing' and batch.complete:
                self.stats.syncs += 1
                self.stats.last_sync = time.time()
                self.stats.last_sync_duration = batch.duration
                for observe in self.sync_observers:
                    observe(batch.duration)
                LOG.debug('Full listing: %d ports in %.3f s',
                          len(self.view.ports), batch.duration)
                if not self.view.ports and not self._warned_empty:
                    LOG.warning('ironic listed no port at all: every MAC is '
                                'treated as unknown.  If ironic has nodes, '
                                'its [ironic] user may lack the role to see '
                                'them (ironic then answers an empty list, '
                                'not an error)')
                self._warned_empty = not self.view.ports

    def _api_error(self, batch):
        self.stats.api_errors += 1
        what = ('full listing' if batch.source == 'listing'
                else 'poll')
        if not self._ready:
            LOG.error('First sync failed, dnsmasq not started; retrying in '
                      '%.0f s: %s', batch.retry_in, batch.error)
        else:
            LOG.error('ironic %s failed (retry in %.0f s); keeping the last '
                      'applied state: %s', what, batch.retry_in, batch.error)

    def _contact(self):
        self._last_contact = self._clock()
        self.stats.last_contact = time.time()
        if self.stats.failed_closed:
            LOG.warning('ironic answers again; leaving the fail-closed state')
            self.stats.failed_closed = False

    def _check_stale(self):
        limit = self.settings.max_stale_seconds
        if (not limit or self.stats.failed_closed
                or self._last_contact is None
                or self._clock() - self._last_contact < limit):
            return
        LOG.error('No successful sync with ironic for %d s '
                  '(max_stale_seconds): failing closed, every MAC denied',
                  limit)
        self.stats.failed_closed = True

    # -- deciding and writing ---------------------------------------------

    def _desired(self):
        if self.stats.failed_closed:
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
        self.stats.allowed, self.stats.denied = allowed, denied
        self.stats.unknown = desired.unknown.value
        self.stats.ports = len(self.view.ports)
        self.stats.inspected = len(self._inspected)
        if written:
            LOG.info('Wrote %d file(s): %s', written, self.status_line())
            if self._notifier is not None:
                self._notifier.status(self.status_line())
        return written

    def _maybe_compact(self):
        now = self._clock()
        if now < self._next_compaction or self.stats.failed_closed:
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
                        'detail': self.stats.dnsmasq_detail,
                        'foreign_records': self.writer.foreign_live()},
            'pid': os.getpid(),
        }

    def status_line(self):
        s = self.stats
        return ('%d allowed, %d denied, unknown MACs %s%s' % (
            s.allowed, s.denied, s.unknown,
            ', FAILED CLOSED' if s.failed_closed else ''))

    # -- helpers: guard, watcher, reload --------------------------------------

    def _start_control(self):
        if self._control_factory is None:
            return
        try:
            server = self._control_factory(self.ask)
        except (control.ControlError, OSError) as exc:
            # Not worth failing the filter for: explain falls back to ironic.
            LOG.error('Control socket not served (pxefilterd-ctl explain '
                      'and status cannot ask this daemon): %s', exc)
            return
        server.start()
        self._control = server

    def _stop_control(self, reason=None):
        server, self._control = self._control, None
        if server is not None:
            server.close()

    def _spawn_guard(self):
        old = self._guard
        if old is not None:
            old.close(wait=0)       # it has exited: just its pipe
        self._guard = self._guard_factory(self.cmds.stop,
                                          self.store.lock_fd)
        if self._armed:
            self._guard.arm()

    def _start_watcher(self):
        if self._watcher_factory is None:
            return
        self.store.track_own_writes = True
        watcher = self._watcher_factory(self.store.path, self.wake)
        try:
            watcher.start()
        except OSError as exc:
            watcher.stop()
            raise hostsdir_mod.HostsDirError('cannot watch %s: %s' % (
                self.store.path, exc.strerror or exc)) from exc
        self._watcher = watcher

    def _stop_watcher(self, reason=None):
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    def _notify_stopping(self, reason):
        if self._notifier is not None:
            self._notifier.stopping(reason or '')

    def _check_helpers(self):
        if self._guard is not None and not self._guard.alive():
            status = self._guard.proc.returncode
            LOG.error('The guard process exited unexpectedly (status %s); '
                      'starting a new one', status)
            self._spawn_guard()
            if status in (guard_mod.EXIT_TERMINATED, guard_mod.EXIT_ORPHANED):
                # It ran the stop command: dnsmasq is down under us.
                if not self.cmds.start:
                    raise DnsmasqFailure(
                        'the guard was signalled and stopped dnsmasq, which '
                        'pxefilterd cannot start (no dnsmasq_start_command)')
                if self.pid_file is None and self._start_job is None:
                    self._restart('the guard was signalled and stopped it')
                # With a pid file, _supervise sees dnsmasq gone (or already
                # started again) and acts on what it sees: a start here
                # could run while a restart already brought it back.
        if self._watcher is not None and not self._watcher.alive():
            LOG.error('The hostsdir watcher died; restarting it and '
                      'rescanning the directory')
            self._stop_watcher()
            self._start_watcher()
            self._rescan()
        if self._control is not None and not self._control.alive():
            LOG.error('The control socket thread died; serving it again')
            self._stop_control()
            self._start_control()
        for thread in self._threads:
            if not thread.is_alive():
                raise RuntimeError('the %s thread died' % thread.name)
        if not self.runner.alive():
            raise RuntimeError('the dnsmasq command thread died')

    def _heal(self):
        if self._watcher is None:
            return
        pending, lost = self._watcher.take()
        if lost:
            LOG.warning('Hostsdir events may have been lost; rescanning')
            self._rescan()
            return
        try:
            for name, created in sorted(pending.items()):
                msg = self.store.heal(name, created=created)
                if msg:
                    self.stats.heals += 1
                    LOG.warning('Hostsdir tampering: %s', msg)
        except hostsdir_mod.TransientWriteError as exc:
            LOG.error('Could not repair the hostsdir: %s', exc)
            self._watcher.events_lost()
        self._forget_foreign()

    def _rescan(self):
        try:
            for msg in self.store.rescan():
                self.stats.heals += 1
                LOG.warning('Hostsdir tampering: %s', msg)
        except hostsdir_mod.TransientWriteError as exc:
            LOG.error('Could not repair the hostsdir: %s', exc)
            if self._watcher is not None:
                self._watcher.events_lost()     # rescan at the next turn
        self._forget_foreign()

    def _forget_foreign(self):
        """After a repair: dnsmasq forgets what it read from foreign
        entries (a reload; see Writer.forget)."""
        found = self.store.take_foreign()
        if found:
            self.writer.forget('%s%s' % (found[0], ' and %d more' % (
                len(found) - 1) if len(found) > 1 else ''))

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
        for thread in self._threads:
            if isinstance(thread, feed.Poller):
                thread.kick()

    # -- exit ---------------------------------------------------------------

    def threads_alive(self):
        """True while a feed thread or the command thread still runs (e.g.
        waiting on ironic, or on a command until its timeout)."""
        return (any(thread.is_alive() for thread in self._threads)
                or self.runner.alive())

    def _shutdown(self, reason, code):
        """Stop dnsmasq first, then everything else; never raises.

        Each step is guarded on its own: a failure in one (e.g. the watcher
        of a vanished directory) must not skip the stop command.  Nothing
        here waits for ironic: the feed threads are told to stop and left
        behind (daemon threads) if a request holds them.
        """
        stopped = not self._armed
        if self._armed:
            if self._start_job is not None:
                # A start still running could bring dnsmasq up after the
                # stop below: let it end first (it is killed at its
                # timeout).
                try:
                    self._start_job[0].exception(
                        timeout=self.cmds.start.timeout + 1)
                except Exception:
                    pass
            # Here, not in the command thread: nothing is left to keep
            # right, and a reload still running there must not delay it.
            try:
                self.cmds.stop.run()
                stopped = True
            except commands.CommandError as exc:
                LOG.error('Could not stop dnsmasq: %s', exc)
            self.stats.dnsmasq_running = False
            self.stats.dnsmasq_state = 'stopped'
        self.runner.shutdown()
        for thread in self._threads:
            thread.stop()
        for step in (self._stop_watcher, self._stop_control,
                     self._notify_stopping):
            try:
                step(reason)
            except Exception:
                LOG.exception('Error during shutdown (ignored)')
        if self._guard is not None:
            if stopped:
                self._guard.disarm()
            else:
                # Leave it armed: it runs the stop command once more.
                self._guard.close(wait=self.cmds.stop.timeout + 5)
        self.store.unlock()
        log = LOG.info if code == EXIT_OK else LOG.error
        log('pxefilterd exiting with status %d: %s', code, reason)
