"""What ironic says, on its way to the view.

:class:`Intake` owns the feed threads (:mod:`pxefilterd.feed`), the queue
their answers arrive on, and how fresh those answers are: the counters of
listings and API errors, the last contact with ironic, and the fail-closed
state of ``max_stale_seconds``.  The feed threads call :meth:`Intake.post`;
everything else runs in the loop thread.
"""

import logging
import queue
import time

from pxefilterd import feed
from pxefilterd import view as view_mod

LOG = logging.getLogger(__name__)


class Intake:
    """The feed threads and what they bring.

    :param client: the ironic client (only the feed threads call it).
    :param settings: callable returning the service's current Settings.
    :param clock: the monotonic clock.
    :param wake: callable waking the loop thread.
    :param observers: list of callables(duration) told of each full
        listing (e.g. the metrics' histogram); may grow later.
    :ivar failed_closed: no complete poll for ``max_stale_seconds``: every
        MAC must be denied.
    """

    def __init__(self, client, settings, clock, wake, observers):
        self._client = client
        self._settings = settings
        self._clock = clock
        self._wake = wake
        self._observers = observers
        self._events = queue.SimpleQueue()
        self._threads = []
        self._seq = feed.Sequence()
        self._contact = None        # monotonic time of the last contact
        self._warned_empty = False
        self.syncs = 0
        self.last_sync = 0.0        # wall clock of the last full listing
        self.last_sync_duration = 0.0
        self.last_contact = 0.0     # wall clock of the last complete poll
        self.api_errors = 0
        self.failed_closed = False

    # -- the threads ---------------------------------------------------------

    def start(self):
        lister = feed.Lister(self._client, self.post, self._settings,
                             self._seq, self._clock)
        poller = feed.Poller(self._client, self.post, self._settings,
                             self._seq, self._clock,
                             request_listing=lister.kick)
        self._threads = [lister, poller]
        for thread in self._threads:
            thread.start()

    def post(self, batch):
        """Called by the feed threads."""
        self._events.put(batch)
        self._wake()

    def kick(self):
        """The settings changed: the poller starts a cycle now."""
        for thread in self._threads:
            if isinstance(thread, feed.Poller):
                thread.kick()

    def check(self):
        """:raises RuntimeError: a feed thread died."""
        for thread in self._threads:
            if not thread.is_alive():
                raise RuntimeError('the %s thread died' % thread.name)

    def alive(self):
        """True while a feed thread still runs (e.g. waiting on ironic)."""
        return any(thread.is_alive() for thread in self._threads)

    def stop(self):
        """Tell the threads to stop; a request that holds one is not
        waited for."""
        for thread in self._threads:
            thread.stop()

    # -- the answers ----------------------------------------------------------

    def drain(self, view, ready):
        """Apply every batch the feed threads posted to ``view``.

        :param ready: the first sync is done (only changes a log line).
        """
        while True:
            try:
                batch = self._events.get_nowait()
            except queue.Empty:
                return
            for event in batch.events:
                if isinstance(event, view_mod.NodeGone):
                    count = len(view.ports_of(event.node))
                    LOG.info('Node %s is gone from ironic; forgetting it and '
                             'its %d port(s)', event.node, count)
                view.apply(event)
            if batch.error is not None:
                self._api_error(batch, ready)
            if batch.source == 'poll' and batch.complete:
                self._contact_now()
            if batch.source == 'listing' and batch.complete:
                self._listed(batch, view)

    def _listed(self, batch, view):
        self.syncs += 1
        self.last_sync = time.time()
        self.last_sync_duration = batch.duration
        for observe in self._observers:
            observe(batch.duration)
        LOG.debug('Full listing: %d ports in %.3f s', len(view.ports),
                  batch.duration)
        if not view.ports and not self._warned_empty:
            LOG.warning('ironic listed no port at all: every MAC is '
                        'treated as unknown.  If ironic has nodes, '
                        'its [ironic] user may lack the role to see '
                        'them (ironic then answers an empty list, '
                        'not an error)')
        self._warned_empty = not view.ports

    def _api_error(self, batch, ready):
        self.api_errors += 1
        what = ('full listing' if batch.source == 'listing'
                else 'poll')
        if not ready:
            LOG.error('First sync failed, dnsmasq not started; retrying in '
                      '%.0f s: %s', batch.retry_in, batch.error)
        else:
            LOG.error('ironic %s failed (retry in %.0f s); keeping the last '
                      'applied state: %s', what, batch.retry_in, batch.error)

    # -- freshness ------------------------------------------------------------

    def _contact_now(self):
        self._contact = self._clock()
        self.last_contact = time.time()
        if self.failed_closed:
            LOG.warning('ironic answers again; leaving the fail-closed state')
            self.failed_closed = False

    def contact_age(self):
        """Seconds since the last complete poll of ironic (or since the
        first sync, if no poll has completed yet), or None before it."""
        if self._contact is None:
            return None
        return max(0.0, self._clock() - self._contact)

    def first_sync_done(self):
        """``max_stale_seconds`` counts from now if no poll has completed
        yet (the inspection answer came ahead of its poll's end)."""
        if self._contact is None:
            self._contact = self._clock()

    def check_stale(self):
        """Fail closed after ``max_stale_seconds`` without contact."""
        limit = self._settings().max_stale_seconds
        if (not limit or self.failed_closed
                or self._contact is None
                or self._clock() - self._contact < limit):
            return
        LOG.error('No successful sync with ironic for %d s '
                  '(max_stale_seconds): failing closed, every MAC denied',
                  limit)
        self.failed_closed = True
