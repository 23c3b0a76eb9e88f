"""The one writer of the hostsdir: how a decision reaches dnsmasq.

:meth:`Writer.converge` makes the files say what the decision says, choosing
how by what dnsmasq can take:

* before dnsmasq runs, everything at once (with a base hosts file: one
  file, see :meth:`pxefilterd.hostsdir.HostsDir.rebase`);
* while it runs, each written file is one inotify event, and the kernel
  queue (16384 events) silently drops what overflows.  So a change set
  larger than ``max_burst`` is written at once *and followed by the reload
  command* (dnsmasq then re-reads everything), or, without a working reload
  command, written at ``burst_rate`` per second (a token bucket that holds
  ``max_burst``).  Pacing never blocks: what is not written yet is written
  at a later call (see :meth:`Writer.next_due`).

The reload command runs in the command thread
(:class:`pxefilterd.dnsmasq.CommandRunner`); its outcome is looked at by the
next call.  (A child dnsmasq's reload is a signal the loop thread sends at
once, through :class:`pxefilterd.dnsmasq.Immediate`: see
:mod:`pxefilterd.child`.)  One failure policy for it, wherever it runs (a
large change set, a rebase, a compaction): the files dnsmasq may have
missed (for a compaction: the files removed) are written again, paced,
which makes dnsmasq read them without a reload; the reload rests for a
backoff (1 s doubling to 60 s) and pacing is used meanwhile.  A failing
reload is logged but never fatal: the state served can still be made
right.  Write errors are the caller's (``TransientWriteError``: retry;
``HostsDirError``: fatal).
"""

import itertools
import logging
import time

from pxefilterd import backoff
from pxefilterd import dnsmasq
from pxefilterd import macs
from pxefilterd import policy

LOG = logging.getLogger(__name__)

_RELOAD_BACKOFF_MAX = 60.0
# Smallest batch a paced write waits for (files): fewer wake-ups.
_PACE_CHUNK_SECONDS = 0.05


class Writer:
    """Converges the hostsdir on a :class:`policy.Desired`.

    :param store: the :class:`pxefilterd.hostsdir.HostsDir`.
    :param reload: the reload :class:`pxefilterd.commands.Command` (may be
        empty: no reload command).
    :param settings: callable returning the current service settings
        (``max_burst``, ``burst_rate``).
    :param serving: callable telling whether dnsmasq may be reading the
        directory now (the daemon's is its supervisor's ``serving``): writes
        are then paced or followed by a reload.  Without one (tools), from
        the first :meth:`dnsmasq_started` on.
    :ivar pending: changes left for a later call by pacing.
    """

    def __init__(self, store, reload, settings, clock=time.monotonic,
                 runner=None, serving=None):
        self.store = store
        self.reload = reload
        self._settings = settings
        self._clock = clock
        self._runner = runner or dnsmasq.Immediate()
        self._reload_job = None      # (future, why, doubt, seq) in flight
        self._reload_queued = None   # (why, doubt) to run after it
        self._serving = serving
        self._started = False
        # Foreign entries met (forget() calls), and how many of them a
        # successful reload (or start) of dnsmasq has made it forget.
        self._foreign_seen = 0
        self._foreign_forgotten = 0
        self.pending = 0
        self.reloads = 0
        self.reload_failures = 0
        self._tokens = 0.0
        self._refilled = 0.0
        self._unsure = set()
        self._reload_after = 0.0
        self._backoff = backoff.Backoff(cap=_RELOAD_BACKOFF_MAX)

    @property
    def serving(self):
        """dnsmasq may be reading the directory now."""
        if self._serving is not None:
            return self._serving()
        return self._started

    def dnsmasq_started(self):
        """dnsmasq has just (re)started: it read every file; the queue is
        empty and nothing it holds is in doubt."""
        self._started = True
        self._unsure.clear()
        self._reload_queued = None
        self._tokens = float(self._settings().max_burst)
        self._refilled = self._clock()

    def reload_usable(self):
        """True if there is a reload command and it is not backing off."""
        return bool(self.reload) and self._clock() >= self._reload_after

    # -- converging ----------------------------------------------------

    def converge(self, desired, known):
        """Write what differs between the files and ``desired``.

        :param known: MACs ironic knows (the base hosts file holds only
            those: the others are left to the wildcard).
        :returns: the number of files (or base lines) written.
        :raises hostsdir.TransientWriteError, hostsdir.HostsDirError:
            from the store; the index still describes the disk.
        """
        self._settle_reload()
        if (self.serving and self._reload_job is None
                and self.foreign_live() and self.reload_usable()):
            # the reload after a foreign entry failed: try it again, at
            # the pace of its backoff
            self.run_reload('foreign entry, again', set(self.store.index))
        changes = policy.diff(self.store.current(), desired)
        for key in self._unsure:
            if key not in changes:
                changes[key] = (desired.unknown if key == macs.WILDCARD
                                else desired.macs.get(key, desired.unknown))
        if not changes:
            self.pending = 0
            return 0
        settings = self._settings()
        if not self.serving:
            self._write_all(changes, desired, known)
            self._unsure.clear()
            self.pending = 0
            return len(changes)
        if (len(changes) > settings.max_burst and self.reload_usable()
                and not self._unsure):
            # (while files are written again after a failed reload, they
            # are paced to the end: a new rebase would undo them)
            if self.store.base_path:
                self._rebase(desired, known)
                doubt = set(desired.macs) | {macs.WILDCARD}
                LOG.info('Moved %d changes into the base hosts file; '
                         'reloading dnsmasq', len(changes))
            else:
                self.store.apply(changes)
                doubt = set(changes)
                LOG.info('Wrote %d files at once; reloading dnsmasq so that '
                         'it re-reads them all', len(changes))
            self._unsure.clear()
            self.pending = 0
            self.run_reload('after %d changes' % len(changes), doubt)
            return len(changes)
        total = len(changes)
        allowed = self._take(total)
        if allowed < total:
            if not self.pending:
                LOG.info('Writing %d files paced at %d/s (dnsmasq reads one '
                         'inotify event per file and its queue holds 16384)',
                         total, settings.burst_rate)
            changes = dict(itertools.islice(changes.items(), allowed))
        self.pending = total
        written = self.store.apply(changes)
        self._unsure.difference_update(changes)
        self.pending = total - written
        return written

    def next_due(self):
        """Seconds until paced writes can go on (inf: nothing pending)."""
        if not self.pending:
            return float('inf')
        rate = self._settings().burst_rate
        need = max(1.0, min(self.pending, rate * _PACE_CHUNK_SECONDS))
        self._refill()
        return max(0.0, (need - self._tokens) / rate)

    def _refill(self):
        settings = self._settings()
        now = self._clock()
        self._tokens = min(float(settings.max_burst),
                           self._tokens + (now - self._refilled)
                           * settings.burst_rate)
        self._refilled = now

    def _take(self, wanted):
        self._refill()
        taken = min(wanted, int(self._tokens + 1e-9))
        self._tokens -= taken
        return taken

    def _write_all(self, changes, desired, known):
        if self.store.base_path:
            self._rebase(desired, known)
        else:
            self.store.apply(changes)

    def _rebase(self, desired, known):
        self.store.rebase({mac: action for mac, action in desired.macs.items()
                           if mac in known}, desired.unknown)

    # -- the reload command ------------------------------------------------

    def run_reload(self, why, doubt=()):
        """Have the reload command run (by the runner: the command
        thread, or at once for a child dnsmasq).

        If it fails, the keys in ``doubt`` (what dnsmasq may not have read)
        are written again, paced, by the next calls of :meth:`converge`,
        and the reload command rests for a growing backoff.  A reload asked
        for while one runs runs after it.
        """
        if self._reload_job is not None:
            queued_why, queued = self._reload_queued or (why, set())
            self._reload_queued = (queued_why, queued | set(doubt))
            return
        self._reload_job = (self._runner.submit(self.reload), why,
                            set(doubt), self._foreign_seen)
        self._settle_reload()

    def forget(self, why):
        """dnsmasq may have read records from a foreign entry, now gone
        (quarantined or repaired): have it re-read the directory.

        Whatever form those records took, only a reload drops them.  When
        there is none (no reload command, or it fails), every file of ours
        is written again, paced, so that our record is the newest dnsmasq
        has for every address we know; addresses we do not know keep the
        foreign record until dnsmasq restarts (logged).  While dnsmasq is
        not serving yet the reload waits until it is (a start in flight may
        have read the entry): :meth:`converge` runs it.
        """
        self._foreign_seen += 1
        everything = set(self.store.index)
        if self.reload:
            if not self.serving:
                return
            LOG.warning('dnsmasq may hold records read from a foreign '
                        'entry (%s): reloading it so that it forgets them',
                        why)
            self.run_reload('foreign entry', everything)
            return
        LOG.error('dnsmasq may hold records from a foreign hostsdir entry '
                  '(%s) and there is no dnsmasq_reload_command to make it '
                  'forget them: writing our %d file(s) again, paced; '
                  'addresses pxefilterd has no file for keep that record '
                  'until dnsmasq restarts', why, len(everything))
        self._unsure |= everything
        self.pending = max(self.pending, len(self._unsure))

    def foreign_live(self):
        """True while dnsmasq may still answer from a foreign record (a
        foreign entry was met and no reload since has succeeded, as of
        the last call of :meth:`converge`)."""
        return self._foreign_forgotten < self._foreign_seen

    def _settle_reload(self):
        """Take in the outcome of a finished reload."""
        if self._reload_job is None or not self._reload_job[0].done():
            return
        future, why, doubt, foreign_seen = self._reload_job
        self._reload_job = None
        exc = future.exception()
        if exc is None:
            self.reloads += 1
            self._foreign_forgotten = max(self._foreign_forgotten,
                                          foreign_seen)
            self._backoff.succeeded()
            self._reload_after = 0.0
        else:
            self.reload_failures += 1
            self._reload_after = self._clock() + self._backoff.failed()
            self._unsure |= doubt
            self.pending = max(self.pending, len(self._unsure))
            LOG.error('dnsmasq reload (%s) failed: %s; writing %d file(s) '
                      'again, paced, instead; reload retried in %.0f s at '
                      'the earliest', why, exc, len(self._unsure),
                      self._backoff.wait)
        if self._reload_queued is not None:
            queued_why, queued = self._reload_queued
            self._reload_queued = None
            if exc is None:
                self.run_reload(queued_why, queued)
            else:
                self._unsure |= queued

    def compact(self, desired, known):
        """Drop the files of MACs ironic no longer knows, then reload.

        dnsmasq keeps every record it has read until a reload; a MAC gone
        from ironic keeps a file (and a record) in the unknown state.  With
        a base hosts file every record moves into it.  Should the reload
        fail, the removed files are written back (paced, as any file in
        doubt): without the reload dnsmasq still holds their records, and
        nothing else could correct them later.

        :returns: the number of MACs dropped, or None if nothing was done.
        """
        self._settle_reload()
        if (not self.reload_usable() or not self.serving
                or self._reload_job is not None or self._unsure):
            return None
        gone = [mac for mac in self.store.cached() if mac not in known]
        per_mac = len(self.store.index) - (macs.WILDCARD in self.store.index)
        if not gone and not (self.store.base_path and per_mac):
            return None
        if self.store.base_path:
            self._rebase(desired, known)
            doubt = set(desired.macs) | {macs.WILDCARD}
        else:
            self.store.remove(gone)
            doubt = set(gone)
        LOG.info('Compaction: dropping %d MAC(s) gone from ironic, folding '
                 '%d file(s) into the base file; reloading dnsmasq',
                 len(gone), per_mac if self.store.base_path else 0)
        self.run_reload('compaction', doubt)
        return len(gone)
