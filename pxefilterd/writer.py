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
        # (future, why, doubt, foreign seq, keys it makes dnsmasq read)
        self._reload_job = None
        self._reload_queued = None   # (why, doubt) to run after it
        self._serving = serving
        self._started = False
        # Foreign entries met (forget() calls), and how many of them a
        # successful reload (or start) of dnsmasq has made it forget.
        self._foreign_seen = 0
        self._foreign_forgotten = 0
        self.pending = 0
        self._deferred = False     # pending includes a loosened wildcard
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
        self.store.fresh.clear()
        self._reload_queued = None
        self._tokens = float(self._settings().max_burst)
        self._refilled = self._clock()

    def reload_usable(self):
        """True if there is a reload command and it is not backing off."""
        return bool(self.reload) and self._clock() >= self._reload_after

    # -- converging ----------------------------------------------------

    def converge(self, desired, known):
        """Write what differs between the files and ``desired``.

        The wildcard is loosened (deny -> allow) only once every other
        change has reached dnsmasq in order: after them in the same paced
        or direct write, or, when they went the reload way (or a reload
        is in flight), at a later call once the reload has run.  Until
        then a known MAC whose deny record dnsmasq has not read yet would
        get the wildcard's allow.

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
        self._deferred = False
        loosen = changes.get(macs.WILDCARD) is policy.Action.ALLOW
        if loosen:
            del changes[macs.WILDCARD]
        if not changes and not loosen:
            self.pending = 0
            return 0
        settings = self._settings()
        if not self.serving:
            if loosen:
                changes[macs.WILDCARD] = policy.Action.ALLOW
            self._write_all(changes, desired, known)
            self._unsure.clear()
            self.pending = 0
            return len(changes)
        if (len(changes) + loosen > settings.max_burst
                and self.reload_usable() and not self._unsure):
            # (while files are written again after a failed reload, they
            # are paced to the end: a new rebase would undo them)
            if self.store.base_path:
                self._rebase(desired, known, self._wildcard_now(desired))
                doubt = set(desired.files) | {macs.WILDCARD}
                LOG.info('Moved %d changes into the base hosts file; '
                         'reloading dnsmasq', len(changes) + loosen)
            else:
                self.store.apply(changes)
                doubt = set(changes)
                LOG.info('Wrote %d files at once; reloading dnsmasq so that '
                         'it re-reads them all', len(changes))
            self._unsure.clear()
            # (a loosened wildcard is written once the reload has run)
            self.pending = int(loosen)
            self._deferred = loosen
            self.run_reload('after %d changes' % (len(changes) + loosen),
                            doubt)
            return len(changes)
        total = len(changes)
        allowed = self._take(total + loosen)
        if allowed < total + loosen:
            if not self.pending and total:
                LOG.info('Writing %d files paced at %d/s (dnsmasq reads one '
                         'inotify event per file and its queue holds 16384)',
                         total, settings.burst_rate)
            changes = dict(itertools.islice(changes.items(), allowed))
        elif loosen and self._reload_job is None:
            # everything else is written first, in this very call
            changes[macs.WILDCARD] = policy.Action.ALLOW
        else:
            self._tokens += loosen
            self._deferred = loosen
        total += loosen
        self.pending = total
        written = self.store.apply(changes)
        self._unsure.difference_update(changes)
        self.pending = total - written
        return written

    def next_due(self):
        """Seconds until paced writes can go on (inf: nothing pending, or
        only a wildcard that waits for the reload in flight, whose end
        wakes the loop)."""
        if not self.pending or (self._deferred and self.pending == 1
                                and self._reload_job is not None):
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
            self._rebase(desired, known, desired.unknown)
        else:
            self.store.apply(changes)

    def _wildcard_now(self, desired):
        """What the wildcard may say now: the decided state, except that
        a loosening waits (see :meth:`converge`)."""
        if (desired.unknown is policy.Action.ALLOW
                and self.store.current().get(macs.WILDCARD)
                is not policy.Action.ALLOW):
            return policy.Action.DENY
        return desired.unknown

    def _rebase(self, desired, known, unknown):
        """Rebase on the records that stay after a reload, the wildcard
        saying ``unknown``."""
        self.store.rebase(policy.kept(desired, known), unknown)

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
        # dnsmasq re-reads every file once the reload has run: what was
        # written until now is no longer fresh, unless the reload fails
        read, self.store.fresh = self.store.fresh, set()
        self._reload_job = (self._runner.submit(self.reload), why,
                            set(doubt), self._foreign_seen, read)
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
        future, why, doubt, foreign_seen, read = self._reload_job
        self._reload_job = None
        exc = future.exception()
        if exc is None:
            self.reloads += 1
            self._foreign_forgotten = max(self._foreign_forgotten,
                                          foreign_seen)
            self._backoff.succeeded()
            self._reload_after = 0.0
        else:
            self.store.fresh |= read
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

    def compact(self, desired, known, threshold=None):
        """Drop the records dnsmasq no longer needs: remove their files,
        then reload.

        dnsmasq keeps every record it has read until a reload.  A MAC gone
        from ironic keeps a file (and a record) in the unknown state; with
        sparse records so does every MAC that was allowed and is denied
        again: such records are *stale* (:func:`pxefilterd.policy.stale`).

        The order never lets a denied MAC be offered: a file saying deny
        is removed only once dnsmasq has surely read it -- it was not
        written since the last reload (or start) of dnsmasq.  A fresh one
        could still be waiting in dnsmasq's inotify queue, and dnsmasq
        cannot read a file that is gone: it would keep its older record
        (an allow) for as long as the reload takes, or fails.  Removing a
        file dnsmasq has read changes no answer (it still holds that
        record, which says what the wildcard says); the reload then reads
        the directory without it.  With sparse records, when every stale
        file is fresh, the reload runs first (cheap: the directory holds
        few files) and a later call removes them.  With a base hosts file
        every record that stays moves into it (fresh deny files are kept
        beside it).  Should the reload fail, the removed files are written
        back (paced, as any file in doubt): without the reload dnsmasq
        still holds their records, and nothing else could correct them
        later.

        :param threshold: None: a periodic compaction (with a base hosts
            file it also folds the per-MAC files into it); a number: only
            if at least that many records are stale.
        :returns: the number of records dropped (0: a reload ran first),
            or None if nothing was done.
        """
        self._settle_reload()
        if (not self.reload_usable() or not self.serving
                or self._reload_job is not None or self._unsure):
            return None
        stale = policy.stale(desired, self.store.cached(), known)
        if threshold is not None and len(stale) < max(threshold, 1):
            return None
        index = self.store.index
        unread = {key for key in self.store.fresh
                  if index.get(key) is policy.Action.DENY}
        ready = [key for key in stale if key not in unread]
        per_mac = len(self.store.index) - (macs.WILDCARD in self.store.index)
        if self.store.base_path:
            if not stale and not per_mac:
                return None
            self.store.rebase(policy.kept(desired, known),
                              self._wildcard_now(desired), keep=unread)
            doubt = set(desired.files) | {macs.WILDCARD}
        elif ready:
            self.store.remove(ready)
            doubt = set(ready)
        elif stale and desired.sparse:
            LOG.info('Compaction: the %d record(s) no longer needed were '
                     'written since dnsmasq last read the directory; '
                     'reloading it first, removing them after', len(stale))
            self.run_reload('compaction, first step')
            return 0
        else:
            return None
        LOG.info('Compaction: dropping %d record(s) no longer needed (%s), '
                 'folding %d file(s) into the base file; reloading dnsmasq',
                 len(ready), 'sparse records: allowed MACs only'
                 if desired.sparse else 'MACs gone from ironic',
                 per_mac if self.store.base_path else 0)
        self.run_reload('compaction', doubt)
        return len(ready)
