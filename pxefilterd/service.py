"""The daemon's lifecycle and sync loop.

    lock -> guard -> purge (or load) -> fail-closed state -> first sync
    (retried until it succeeds) -> start dnsmasq -> loop -> stop dnsmasq

Invariant: dnsmasq started by us only ever serves a hostsdir that reflects a
successful sync, or the fail-closed state (everything denied).  Every exit
path logs why and returns an exit status.

All hostsdir writes happen in the thread that calls :meth:`Service.run`;
signal handlers and the watcher only set flags and wake it.
"""

import dataclasses
import logging
import threading
import time

from pxefilterd import commands
from pxefilterd import hostsdir as hostsdir_mod
from pxefilterd import ironic
from pxefilterd import macs
from pxefilterd import policy

LOG = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78   # EX_CONFIG: systemd's RestartPreventExitStatus

# Longest sleep of the loop, so that systemd watchdog pings keep flowing.
_MAX_TICK = 5.0
_FIRST_SYNC_BACKOFF_MAX = 30.0
# How long an exit waits for a port listing in flight (it is abandoned
# after that, but a thread still writing a log line as the interpreter
# exits can abort it).
_LISTING_EXIT_WAIT = 2.0


class _Interrupted(Exception):
    """A paced burst was cut short by a stop request."""


class _Listing:
    """One full port listing, fetched in a background thread.

    At 10k ports the listing takes over a second; run in the loop thread it
    would delay the inspection polls behind it.  The thread only calls
    ``fetch`` and keeps its outcome: the hostsdir and the service's state
    are touched by the loop thread alone.

    :ivar refreshed: node UUIDs whose ports a poll fetched after this
        listing started (maintained by the loop thread).
    """

    def __init__(self, fetch, wake, clock):
        self.started = clock()
        self.refreshed = set()
        self._outcome = None
        self._error = None
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fetch, wake),
                                        name='port-listing', daemon=True)
        self._thread.start()

    def _run(self, fetch, wake):
        try:
            self._outcome = fetch()
        except BaseException as exc:   # re-raised in the loop thread
            self._error = exc
        finally:
            self._finished.set()
            wake()

    def done(self):
        return self._finished.is_set()

    def wait(self, timeout):
        """Wait up to ``timeout`` seconds for the fetch; return done()."""
        return self._finished.wait(timeout)

    def result(self):
        """Return the fetched ports, or raise what the fetch raised."""
        if self._error is not None:
            raise self._error
        return self._outcome


@dataclasses.dataclass
class Settings:
    """The tunables the loop reads; replaced as a whole on SIGHUP."""

    sync_period: float = 15.0
    poll_interval: float = 1.0
    options: policy.Options = policy.Options()
    max_stale_seconds: float = 0.0
    purge: bool = True
    lock_wait: float = 10.0
    max_burst: int = 8000
    burst_rate: int = 2000
    compaction_interval: float = 3600.0   # seconds; 0 = never


@dataclasses.dataclass
class Stats:
    """Counters for status lines and metrics."""

    allowed: int = 0
    denied: int = 0
    unknown: str = 'deny'
    last_sync: float = 0.0       # wall clock of the last successful sync
    last_sync_duration: float = 0.0
    syncs: int = 0
    api_errors: int = 0
    heals: int = 0
    dnsmasq_running: bool = False
    failed_closed: bool = False


class Service:
    """Wires a snapshot source, the hostsdir and the dnsmasq commands.

    :param source: has ``snapshot()``, ``inspecting()`` and ``ports_of()``
        (see :class:`pxefilterd.ironic.IronicSource`), raising
        :class:`pxefilterd.ironic.ApiError` on failure.
    :param store: a :class:`pxefilterd.hostsdir.HostsDir`.
    :param cmds: a :class:`pxefilterd.commands.Commands`.
    :param guard_factory: callable(stop_argv, timeout, lock_fd) returning a
        guard (see :mod:`pxefilterd.guard`), or None for no guard.
    :param watcher_factory: callable(path, wake) returning a started-able
        watcher (see :mod:`pxefilterd.watcher`), or None.
    :param reload_settings: callable returning new Settings on SIGHUP.
    """

    def __init__(self, settings, source, store, cmds, guard_factory=None,
                 watcher_factory=None, notifier=None, reload_settings=None,
                 clock=time.monotonic):
        self.settings = settings
        self.source = source
        self.store = store
        self.cmds = cmds
        self.stats = Stats()
        self._guard_factory = guard_factory
        self._watcher_factory = watcher_factory
        self._notifier = notifier
        self._reload_settings = reload_settings
        self._clock = clock
        self.sync_observers = []   # callables(duration), e.g. metrics
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stop_reason = None
        self._hup = False
        self._guard = None
        self._watcher = None
        self._armed = False
        self._ports = {}
        self._inspecting = frozenset()
        self._dirty = False
        self._last_contact = None
        self._next_full = 0.0
        self._next_poll = 0.0
        self._next_compaction = float('inf')
        self._listing = None   # the full port listing in flight, if any

    # -- signals (any thread) ------------------------------------------------

    def request_stop(self, reason):
        """Ask the loop to exit cleanly (exit status 0)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stopping.set()
        self._wake.set()

    def request_reload(self):
        self._hup = True
        self._wake.set()

    def wake(self):
        self._wake.set()

    # -- lifecycle ------------------------------------------------------------

    def run(self):
        """Run until stopped; return the exit status.  Never raises."""
        try:
            self.store.lock(wait=self.settings.lock_wait)
        except hostsdir_mod.HostsDirError as exc:
            LOG.error('Cannot start: %s', exc)
            return EXIT_FAILURE
        code, reason = EXIT_FAILURE, 'unexpected error'
        try:
            code, reason = self._run_locked()
        except hostsdir_mod.HostsDirError as exc:
            code, reason = EXIT_FAILURE, 'hostsdir failure: %s' % exc
        except commands.CommandError as exc:
            code, reason = EXIT_FAILURE, str(exc)
        except _Interrupted:
            code, reason = EXIT_OK, self._stop_reason
        except Exception as exc:
            LOG.exception('Unexpected error')
            code, reason = EXIT_FAILURE, 'unexpected error: %r' % (exc,)
        finally:
            self._shutdown(reason, code)
        return code

    def _run_locked(self):
        if self._guard_factory is not None and self.cmds.stop:
            self._spawn_guard()
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
        if external:
            # Started elsewhere: assume it serves, so bursts are handled.
            self.stats.dnsmasq_running = True
        self._apply(policy.fail_closed(self.store.cached()))
        if external and self.settings.purge and self.cmds.reload:
            # dnsmasq still holds every record it read from purged files,
            # and an exact-MAC allow beats the wildcard deny: drop them now,
            # not after the first sync (which may take long).
            self.cmds.reload.run()
        LOG.info('Hostsdir in the fail-closed state; waiting for the first '
                 'successful sync before dnsmasq is started')
        if not self._first_sync():
            return EXIT_OK, self._stop_reason
        self._armed = True
        if self._guard is not None:
            self._guard.arm()
        self.cmds.start.run()
        self.stats.dnsmasq_running = True
        self._start_watcher()
        if self._watcher is not None:
            # Anything changed before the watch existed has no event.
            self._rescan()
        if self._notifier is not None:
            self._notifier.ready(self.status_line())
        LOG.info('Ready: %s', self.status_line())
        return self._loop()

    def _first_sync(self):
        backoff = 1.0
        while self._stop_reason is None:
            if self._notifier is not None:
                self._notifier.watchdog()
            try:
                self._full_sync()
                return True
            except ironic.ApiError as exc:
                self.stats.api_errors += 1
                LOG.error('First sync failed, dnsmasq not started; retrying '
                          'in %.0f s: %s', backoff, exc)
            except hostsdir_mod.TransientWriteError as exc:
                LOG.error('First sync could not write the hostsdir; retrying '
                          'in %.0f s: %s', backoff, exc)
            self._wake.wait(backoff)
            self._wake.clear()
            backoff = min(backoff * 2, _FIRST_SYNC_BACKOFF_MAX)
        return False

    def _loop(self):
        now = self._clock()
        self._next_full = now + self._sync_period()
        self._next_poll = now + self._poll_interval()
        self._next_compaction = now + self._compaction_interval()
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
            self._heal()
            now = self._clock()
            if now >= self._next_full and self._listing is None:
                self._next_full = now + self._sync_period()
                self._listing = _Listing(self.source.ports, self._wake.set,
                                         self._clock)
            if self._guarded(self._sync_step, now) and self._dirty:
                # e.g. after a transient write error, at the end of the
                # fail-closed state, or ports adopted before an API error
                self._guarded(lambda: self._apply(self._desired()))
            self._check_stale()
            self._maybe_compact()
            if self._notifier is not None:
                self._notifier.watchdog()
            # A listing in flight wakes the loop when it ends; until then
            # its due time (passed if it runs longer than sync_period) is
            # not a reason to wake up.
            next_full = (self._next_full if self._listing is None
                         else float('inf'))
            timeout = min(next_full, self._next_poll) - self._clock()
            if self._dirty:
                timeout = min(timeout, 1.0)
            self._wake.wait(max(0.0, min(timeout, _MAX_TICK)))

    def _sync_step(self, now):
        if self._listing is not None and self._listing.done():
            listing, self._listing = self._listing, None
            self._next_poll = now + self._poll_interval()
            self._finish_full_sync(listing)
        elif now >= self._next_poll:
            self._next_poll = now + self._poll_interval()
            self._poll()

    def _guarded(self, step, *args):
        """Run ``step``; log ironic and transient write errors.

        Returns False after a write error (retried at the next iteration).
        """
        try:
            step(*args)
        except ironic.ApiError as exc:
            self.stats.api_errors += 1
            LOG.error('Sync with ironic failed; keeping the last applied '
                      'state: %s', exc)
        except hostsdir_mod.TransientWriteError as exc:
            self._dirty = True
            LOG.error('Could not write the hostsdir, retrying: %s', exc)
            return False
        return True

    def _sync_period(self):
        period = self.settings.sync_period
        return period if period > 0 else float('inf')

    def _poll_interval(self):
        interval = self.settings.poll_interval
        return interval if interval > 0 else float('inf')

    def _compaction_interval(self):
        interval = self.settings.compaction_interval
        if interval > 0 and self.cmds.reload:
            return interval
        return float('inf')

    # -- syncing --------------------------------------------------------------

    def _desired(self):
        snapshot = policy.Snapshot(ports=self._ports,
                                   inspecting=self._inspecting)
        if self.stats.failed_closed:
            return policy.fail_closed(self.store.cached())
        return policy.decide(snapshot, self.settings.options,
                             self.store.cached())

    def _full_sync(self):
        """Fetch a whole snapshot and apply it, in this thread."""
        started = self._clock()
        snapshot = self.source.snapshot()
        self._ports = snapshot.ports     # a fresh dict; never mutated here
        self._inspecting = snapshot.inspecting
        self._contact()
        written = self._apply(self._desired())
        self._count_sync(started, written)

    def _finish_full_sync(self, listing):
        """Adopt a background port listing, refresh inspection, apply.

        The listing's pages were read over a second or more.  For the nodes
        whose inspection changed meanwhile, the pages may be older or newer
        than what the poll fetched, so their ports are fetched once more.
        Contact with ironic counts only once the inspection answer is in.

        :raises ironic.ApiError: the listing, or a request after it, failed.
        """
        ports = listing.result()
        refreshed = listing.refreshed
        if refreshed:
            fresh = self.source.ports_of(refreshed)
            ports = {mac: node for mac, node in ports.items()
                     if node not in refreshed}
            ports.update(fresh)
        self._ports = ports     # a fresh dict; never mutated here
        self._dirty = True      # applied below, or by the loop after an error
        self._refresh_inspecting()
        written = self._apply(self._desired())
        self._count_sync(listing.started, written)

    def _count_sync(self, started, written):
        self.stats.syncs += 1
        self.stats.last_sync = time.time()
        self.stats.last_sync_duration = self._clock() - started
        for observe in self.sync_observers:
            observe(self.stats.last_sync_duration)
        LOG.debug('Full sync: %d ports, %d node(s) inspected, %d file(s) '
                  'written in %.3f s', len(self._ports),
                  len(self._inspecting), written,
                  self.stats.last_sync_duration)

    def _poll(self):
        changed = self._refresh_inspecting()
        if changed:
            written = self._apply(self._desired())
            LOG.info('Inspection changed for %d node(s): %d file(s) written',
                     len(changed), written)

    def _refresh_inspecting(self):
        """Ask which nodes are under inspection; for those that changed,
        fetch their ports.  Return the changed node UUIDs (nothing applied).

        :raises ironic.ApiError: nothing was changed then.
        """
        inspecting = self.source.inspecting()
        self._contact()
        changed = inspecting ^ self._inspecting
        if not changed:
            return changed
        fresh = self.source.ports_of(changed)
        ports = {mac: node for mac, node in self._ports.items()
                 if node not in changed}
        ports.update(fresh)
        self._ports = ports
        self._inspecting = inspecting
        if self._listing is not None:
            self._listing.refreshed |= changed
        return changed

    def _contact(self):
        self._last_contact = self._clock()
        if self.stats.failed_closed:
            LOG.warning('ironic answers again; leaving the fail-closed state')
            self.stats.failed_closed = False
            self._dirty = True   # a poll alone would not re-apply

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
        try:
            self._apply(self._desired())
        except hostsdir_mod.TransientWriteError as exc:
            self._dirty = True
            LOG.error('Could not write the fail-closed state: %s', exc)

    def _apply(self, desired):
        """Write what differs from the index; return the number written.

        While dnsmasq runs, a change set larger than ``max_burst`` would
        overflow dnsmasq's inotify queue (updates silently lost): it is
        followed by the reload command when there is one, else paced.
        """
        changes = policy.diff(self.store.current(), desired)
        self._dirty = True
        running = self.stats.dnsmasq_running
        big = running and len(changes) > self.settings.max_burst
        if self.store.base_path and changes and (
                not running or (big and self.cmds.reload)):
            # One file for dnsmasq to read instead of one per MAC.
            self._rebase(desired)
            written = len(changes)
            if running:
                LOG.info('Moved %d changes into the base hosts file; '
                         'reloading dnsmasq', written)
                self.cmds.reload.run()
        elif big and self.cmds.reload:
            written = self.store.apply(changes)
            LOG.info('Wrote %d files at once; reloading dnsmasq so that it '
                     're-reads them all', written)
            self.cmds.reload.run()
        elif big:
            LOG.info('Writing %d files paced at %d/s beyond the first %d '
                     '(no dnsmasq_reload_command)', len(changes),
                     self.settings.burst_rate, self.settings.max_burst)
            written = self.store.apply(changes, pace=self._pacer())
        else:
            written = self.store.apply(changes)
        self._dirty = False
        allowed, denied = desired.counts()
        self.stats.allowed, self.stats.denied = allowed, denied
        self.stats.unknown = desired.unknown.value
        if written:
            LOG.info('Wrote %d file(s): %s', written, self.status_line())
            if self._notifier is not None:
                self._notifier.status(self.status_line())
        return written

    def _rebase(self, desired):
        known = {mac: action for mac, action in desired.macs.items()
                 if mac in self._ports}
        self.store.rebase(known, desired.unknown)

    def _pacer(self):
        started = self._clock()
        burst, rate = self.settings.max_burst, self.settings.burst_rate

        def pace(written):
            if written <= burst:
                return
            delay = started + (written - burst) / rate - self._clock()
            if delay > 0 and self._stopping.wait(delay):
                raise _Interrupted()
            if self._notifier is not None and written % rate == 0:
                self._notifier.watchdog()

        return pace

    def _maybe_compact(self):
        """Remove files of MACs gone from ironic, then reload dnsmasq.

        dnsmasq keeps every record it has read until a reload; a MAC gone
        from ironic keeps a file (and a record) in the unknown state.  If the
        reload fails, the files are written back: without the reload the
        records would stay in dnsmasq with nothing left to correct them.
        """
        now = self._clock()
        if now < self._next_compaction or self.stats.failed_closed:
            return
        self._next_compaction = now + self._compaction_interval()
        gone = [mac for mac in self.store.cached() if mac not in self._ports]
        per_mac = len(self.store.index) - (macs.WILDCARD in self.store.index)
        if not gone and not (self.store.base_path and per_mac):
            return
        unknown = self.store.index.get(macs.WILDCARD, policy.Action.DENY)
        if self.store.base_path:
            self._rebase(self._desired())
        else:
            self.store.remove(gone)
        try:
            self.cmds.reload.run()
        except commands.CommandError as exc:
            # dnsmasq still holds the records of the removed MACs; without
            # their files nothing could correct them later.
            LOG.error('Compaction: reload failed, restoring %d file(s): %s',
                      len(gone), exc)
            self.store.apply({mac: unknown for mac in gone})
            return
        LOG.info('Compaction: dropped %d MAC(s) gone from ironic, folded '
                 '%d file(s) into the base file; dnsmasq reloaded',
                 len(gone), per_mac if self.store.base_path else 0)

    def status_line(self):
        s = self.stats
        return ('%d allowed, %d denied, unknown MACs %s%s' % (
            s.allowed, s.denied, s.unknown,
            ', FAILED CLOSED' if s.failed_closed else ''))

    # -- helpers: guard, watcher, reload --------------------------------------

    def _spawn_guard(self):
        self._guard = self._guard_factory(self.cmds.stop.full_argv,
                                          self.cmds.stop.timeout,
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
            LOG.error('The guard process exited unexpectedly (status %s); '
                      'starting a new one', self._guard.proc.returncode)
            self._spawn_guard()
        if self._watcher is not None and not self._watcher.alive():
            LOG.error('The hostsdir watcher died; restarting it and '
                      'rescanning the directory')
            self._stop_watcher()
            self._start_watcher()
            self._rescan()

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

    def _rescan(self):
        try:
            for msg in self.store.rescan():
                self.stats.heals += 1
                LOG.warning('Hostsdir tampering: %s', msg)
        except hostsdir_mod.TransientWriteError as exc:
            LOG.error('Could not repair the hostsdir: %s', exc)

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
                 'deny_unknown_macs=%s, auto_discovery=%s); syncing now',
                 new.sync_period, new.options.deny_unknown_macs,
                 new.options.auto_discovery)
        self.settings = new
        self._dirty = True   # the new policy, on what we know, right away
        self._next_full = self._clock()

    # -- exit ---------------------------------------------------------------

    def _shutdown(self, reason, code):
        """Stop dnsmasq first, then everything else; never raises.

        Each step is guarded on its own: a failure in one (e.g. the watcher
        of a vanished directory) must not skip the stop command.
        """
        stopped = not self._armed
        if self._armed:
            try:
                self.cmds.stop.run()
                stopped = True
            except commands.CommandError as exc:
                LOG.error('Could not stop dnsmasq: %s', exc)
            self.stats.dnsmasq_running = False
        if self._listing is not None and not self._listing.wait(
                _LISTING_EXIT_WAIT):
            # A daemon thread; it dies with the process.
            LOG.info('Exiting with a full port listing still running')
        for step in (self._stop_watcher, self._notify_stopping):
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
