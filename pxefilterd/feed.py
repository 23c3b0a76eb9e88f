"""The threads that ask ironic, and the change feed they implement.

All ironic I/O happens here, never in the service's loop thread: each
thread turns answers into :mod:`pxefilterd.view` events and hands them over
as a :class:`Batch` through ``post`` (the loop applies them).  A hung ironic
only ever blocks these threads, for at most the request timeout times the
retries.

:class:`Poller`, every ``inspection_poll_interval`` (1 s) while a node is
inspected (or auto-discovery is on), else every ``idle_poll_interval``
(1.5 s: a poll costs ironic ~11 ms of server time, and an idle fleet is
polled most of the time):

1. **inspection poll** -- every node in ``inspect wait`` (every page; cheap:
   ironic has an index on the state).  ``inspecting`` is listed at every
   cycle while a node is in it or has just left ``inspect wait`` (its
   ramdisk's data is being processed), else every :data:`INSPECTING_EVERY`
   cycles: a node that starts inspection passes through ``inspecting``
   within a second (power on) and is seen in ``inspect wait``, and an idle
   fleet costs ironic one request per cycle instead of two.
2. **per-node fetches**, at most ``port_fetches_per_poll`` a cycle, most
   urgent first: nodes that left inspection (a 404 says the node was
   deleted, so its MACs become unknown); and, with ``deny_unknown_macs``
   only, nodes that entered it and then every inspected node in turn: a
   port deleted from an inspected node must stop booting, and only a
   fetch can tell (without ``deny_unknown_macs`` its MAC is unknown, and
   unknown MACs boot while a node is inspected: nothing to change).
3. **change feeds**, at every cycle while a port change can alter a
   decision (some node is inspected, or auto-discovery is on), else every
   :data:`IDLE_FEED_INTERVAL`; a feed whose reads cost ironic more than
   :data:`FEED_BUDGET` of its time is read less often:

   - *new ports*: the newest ports by id (``sort_key=id&sort_dir=desc``,
     the primary key: 23 ms of ironic time at 10k ports, 54 ms at
     100k), paged back until a page holds a port seen before;
   - *changed ports*: ``sort_key=updated_at&sort_dir=desc`` (address or
     node edits), paged back to the newest change already seen minus
     :data:`UPDATE_OVERLAP` (commit order and conductor clocks).

:class:`Lister`, every ``sync_period`` (or less often, so that listings
take at most :data:`LISTING_BUDGET` of ironic's time): the full port
listing, the backstop for what leaves no trace in any cheap listing --
deletions of ports and nodes that are not inspected.  It also runs at
start-up (the first sync) and whenever a feed could not find where it left
off.
"""

import collections
import dataclasses
import datetime
import itertools
import logging
import threading
import time
import typing

from pxefilterd import backoff
from pxefilterd import ironic
from pxefilterd import policy
from pxefilterd import view

LOG = logging.getLogger(__name__)

#: Ports asked per change-feed page.
FEED_PAGE = 50
#: Pages a feed reads at most before asking for a full listing instead.
FEED_MAX_PAGES = 20
#: How far behind the newest update seen the changed-ports feed reads.
UPDATE_OVERLAP = datetime.timedelta(seconds=10)
#: Seconds between change-feed reads while no port change can alter a
#: decision (nothing inspected, no auto-discovery): keeps them short.
IDLE_FEED_INTERVAL = 30.0
#: Most of ironic's time one change feed may take (its cost over the time
#: between two reads).  Its cost is the shortest of its last
#: :data:`FEED_COST_READS` reads, and is known from the second read on: one
#: read slowed down by a busy ironic (the start-up listing runs for half a
#: minute at 100k ports) says little about what the feed itself costs, and
#: must not space the reads out for long.
FEED_BUDGET = 0.05
FEED_COST_READS = 3
#: Seconds a cycle may start early and still count as a poll interval
#: after the last read (clock resolution; cycles start an interval apart).
FEED_SLACK = 0.01
#: Most of ironic's time the backstop listing may take: listings are
#: spaced by at least their own duration over this.
LISTING_BUDGET = 0.02
#: Inspection polls between two listings of the ``inspecting`` state.
INSPECTING_EVERY = 5
#: Longest wait after a failed cycle before the next try.
MAX_BACKOFF = 30.0


class Sequence:
    """Numbers taken when a request is sent: higher means fresher."""

    def __init__(self):
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            return next(self._counter)


@dataclasses.dataclass
class Batch:
    """What one cycle of a thread learnt.

    :ivar events: view events, in the order they must be applied.
    :ivar source: ``'poll'`` or ``'listing'``.
    :ivar error: the ironic error that cut the cycle short, if any (the
        events gathered before it are still valid).
    :ivar complete: the cycle did everything it set out to do; only a
        complete poll counts as contact with ironic (``max_stale_seconds``).
    :ivar started: monotonic time the cycle started.
    :ivar duration: seconds it took.
    :ivar retry_in: seconds until the thread tries again.
    :ivar requests: HTTP requests the cycle made.
    """

    events: list
    source: str
    error: typing.Optional[Exception] = None
    complete: bool = True
    started: float = 0.0
    duration: float = 0.0
    retry_in: float = 0.0
    requests: int = 0


class _Worker(threading.Thread):
    """A daemon thread that runs ``cycle()`` until stopped."""

    def __init__(self, name, client, post, settings, seq, clock):
        super().__init__(name=name, daemon=True)
        self.client = client
        self._post = post
        self._settings = settings
        self._seq = seq
        self._clock = clock
        self._stopped = threading.Event()
        self._kick = threading.Event()
        self._failures = 0
        #: Set by a cycle that did part of its work and failed the rest in
        #: a way that needs no backoff of the whole thread.
        self.soft_error = None

    def stop(self):
        self._stopped.set()
        self._kick.set()

    def kick(self):
        """Run the next cycle now instead of at its due time."""
        self._kick.set()

    def _sleep(self, seconds):
        if self._kick.wait(max(0.0, seconds)):
            self._kick.clear()

    def _flush(self, events):
        """Hand ``events`` over now, before the cycle ends (they are taken
        out of the list); the cycle's own batch follows with the rest."""
        self._post(Batch(events=list(events), source=self.source,
                         complete=False, started=self._clock()))
        del events[:]

    def run(self):
        while not self._stopped.is_set():
            started = self._clock()
            requests = self.client.requests
            events = []
            try:
                self.soft_error = None
                complete = self.cycle(events)
                error = self.soft_error
                self._failures = 0
            except ironic.ApiError as exc:
                complete, error = False, exc
                self._failures += 1
            except Exception as exc:   # a bug: say so, keep going
                LOG.exception('%s cycle failed unexpectedly', self.name)
                complete, error = False, exc
                self._failures += 1
            if self._stopped.is_set():
                return
            wait = self.interval()
            if self._failures:
                wait = self.retry_wait(
                    wait, backoff.delay(self._failures, MAX_BACKOFF))
            self._post(Batch(events=events, source=self.source,
                             error=error, complete=complete, started=started,
                             duration=self._clock() - started,
                             retry_in=wait,
                             requests=self.client.requests - requests))
            self._sleep(wait if self._failures
                        else wait - (self._clock() - started))


class Lister(_Worker):
    """The full port listing: at start, then every ``sync_period``."""

    source = 'listing'

    def __init__(self, client, post, settings, seq, clock=time.monotonic):
        super().__init__('ironic-listing', client, post, settings, seq,
                         clock)
        self._last_duration = 0.0

    def interval(self):
        period = self._settings().sync_period
        if period <= 0:
            return float('inf')
        # Never more than LISTING_BUDGET of ironic's time, however large
        # the fleet (a listing is ~0.25 s of server time per 1000 ports).
        return max(period, self._last_duration / LISTING_BUDGET)

    @staticmethod
    def retry_wait(interval, backoff):
        # A failed listing is retried long before its next period.
        return min(interval, backoff)

    def cycle(self, events):
        started = self._clock()
        events.append(self.client.listing(self._seq))
        self._last_duration = self._clock() - started
        return True


class Poller(_Worker):
    """Inspection poll, per-node fetches and the change feeds."""

    source = 'poll'

    def __init__(self, client, post, settings, seq, clock=time.monotonic,
                 request_listing=None):
        super().__init__('ironic-poll', client, post, settings, seq, clock)
        self._request_listing = request_listing or (lambda: None)
        self._last = None        # the previous complete inspection answer
        self._states = {}        # provision state -> its last answer
        self._cycles = 0
        self._work = collections.OrderedDict()   # node -> why, urgent first
        self._turn = collections.deque()          # round-robin refreshes
        self._seen_new = None    # UUIDs of the last new-ports page
        self._mark = None        # newest updated_at seen
        self._feed_runs = {}     # feed -> (last cycle start, durations)
        self._active = True      # a node is inspected, or may just be
        self._tries = {}         # node -> failed fetches in a row
        self._not_before = {}    # node -> when its fetch may be tried again

    def interval(self):
        settings = self._settings()
        interval = settings.poll_interval
        if not self._active and settings.idle_poll_interval > 0:
            interval = max(interval, settings.idle_poll_interval)
        return interval if interval > 0 else float('inf')

    @staticmethod
    def retry_wait(interval, backoff):
        # An ironic that fails is asked less often, up to MAX_BACKOFF.
        return max(interval, backoff)

    def cycle(self, events):
        started = self._clock()
        settings = self._settings()
        options = settings.options
        seq = self._seq()
        nodes = self._inspection_answer()
        events.append(view.Inspection(seq, nodes))
        # Decided on at once: the per-node fetches and the feeds below take
        # ironic a while (each fetch scans its port table on SQLite).
        self._flush(events)
        now_in = {n for n, info in nodes.items()
                  if policy.inspected(info, options)}
        previous, self._last = self._last, nodes
        if previous is None:
            before = now_in
        else:
            before = {n for n, info in previous.items()
                      if policy.inspected(info, options)}
        for node in sorted(before - now_in):
            self._work[node] = 'left'
            self._work.move_to_end(node, last=False)
        if options.deny_unknown_macs:
            # (the first answer comes with the first listing: nothing to
            # check yet)
            for node in sorted(now_in - before):
                self._work.setdefault(node, 'entered')
        self._fetch_nodes(events, settings, now_in)
        active = bool(now_in or options.auto_discovery)
        self._feeds(events, started, active=active,
                    interval=settings.poll_interval)
        self._active = active or bool(self._work)
        # Complete (contact with ironic, for max_stale_seconds) only when no
        # node's ports are still unknown because their fetch failed.
        return self.soft_error is None and not self._tries

    def _inspection_answer(self):
        """Ask for ``inspect wait`` (and ``inspecting`` when due, or when a
        node left ``inspect wait``); return every node of both."""
        waiting = self.client.inspection_nodes({'inspect wait'})
        previous = self._states.get('inspect wait', {})
        due = (self._cycles % INSPECTING_EVERY == 0
               or not previous.keys() <= waiting.keys()
               or self._states.get('inspecting', True))
        if due:
            self._states['inspecting'] = self.client.inspection_nodes(
                {'inspecting'})
        self._states['inspect wait'] = waiting
        self._cycles += 1
        nodes = {uuid: info
                 for uuid, info in self._states['inspecting'].items()
                 if uuid not in waiting}
        nodes.update(waiting)
        return nodes

    # -- per-node fetches ---------------------------------------------------

    def _fetch_nodes(self, events, settings, inspected):
        budget = settings.port_fetches_per_poll
        if settings.options.deny_unknown_macs and budget > len(self._work):
            self._turn = collections.deque(
                n for n in self._turn if n in inspected)
            queued = set(self._turn)
            self._turn.extend(sorted(inspected - queued))
            for _ in range(min(len(self._turn),
                               budget - len(self._work))):
                node = self._turn.popleft()
                self._turn.append(node)
                self._work.setdefault(node, 'refresh')
        now = self._clock()
        failed = []
        while self._work and budget > 0:
            node, why = next(iter(self._work.items()))
            del self._work[node]
            if self._not_before.get(node, now) > now:
                failed.append((node, why))     # backing off: skipped
                continue
            budget -= 1
            seq = self._seq()
            try:
                ports = self.client.ports_of(node)
            except ironic.NodeGone:
                events.append(view.NodeGone(seq, node))
            except ironic.ApiError as exc:
                # This node's fetch is retried later (with backoff) and
                # the others go on: one node must not hold the poll.
                self.soft_error = exc
                tries = self._tries.get(node, 0) + 1
                self._tries[node] = tries
                self._not_before[node] = now + backoff.delay(tries,
                                                             MAX_BACKOFF)
                failed.append((node, why))
                continue
            else:
                events.append(view.NodePorts(seq, node, ports))
            self._tries.pop(node, None)
            self._not_before.pop(node, None)
        for node, why in failed:
            self._work.setdefault(node, why)   # behind the others

    # -- change feeds ------------------------------------------------------

    def _feeds(self, events, started, active, interval):
        """Read each change feed that is due in the cycle that began at
        ``started``.

        A feed is due every ``interval`` while ``active`` (a port change can
        alter a decision), else every :data:`IDLE_FEED_INTERVAL`; and never
        more often than keeps its cost within :data:`FEED_BUDGET` of
        ironic's time (on SQLite the changed-ports feed is a sort of the
        whole port table: ~150 ms at 100k ports).
        """
        seq = self._seq()
        changed = {}
        for name, read in (('new', self._new_ports),
                           ('changed', self._changed_ports)):
            last, costs = self._feed_runs.get(
                name, (None, collections.deque(maxlen=FEED_COST_READS)))
            # Timed from the cycle's start, as cycles are scheduled: a feed
            # due every cycle is read every cycle, however long the
            # inspection poll before it took.
            if last is not None:
                since = started - last
                base = interval if active else IDLE_FEED_INTERVAL
                cost = min(costs) if len(costs) > 1 else 0.0
                if since < base - FEED_SLACK or since < cost / FEED_BUDGET:
                    continue
            began = self._clock()
            read(changed)
            costs.append(self._clock() - began)
            self._feed_runs[name] = (started, costs)
        if changed:
            events.append(view.PortChanges(seq, changed))

    def _new_ports(self, changed):
        seen = self._seen_new
        first = None
        pages = 0
        page = []
        for uuid, mac, node, _ in self.client.ports(
                {'sort_key': 'id', 'sort_dir': 'desc'}, limit=FEED_PAGE,
                max_pages=FEED_MAX_PAGES):
            changed[uuid] = (mac, node)
            if view.is_derived(uuid):
                continue       # a client id, not a port of the page
            page.append(uuid)
            if len(page) < FEED_PAGE:
                continue
            pages += 1
            if first is None:
                first = set(page)
            if seen is None or seen.intersection(page):
                break
            if pages >= FEED_MAX_PAGES:
                self._lost('new ports')
                break
            page = []
        if first is None:
            first = set(page)
        self._seen_new = first

    def _changed_ports(self, changed):
        mark = self._mark
        newest = mark
        since = mark - UPDATE_OVERLAP if mark is not None else None
        count = 0
        for uuid, mac, node, entry in self.client.ports(
                {'sort_key': 'updated_at', 'sort_dir': 'desc'},
                fields=ironic.PORT_FIELDS + ',updated_at', limit=FEED_PAGE,
                max_pages=FEED_MAX_PAGES):
            stamp = ironic.parse_time(entry.get('updated_at'))
            if stamp is None:
                break          # never updated: the rest of the list too
            changed[uuid] = (mac, node)
            if view.is_derived(uuid):
                continue       # a client id, not a port of the page
            if newest is None or stamp > newest:
                newest = stamp
            count += 1
            if since is None and count >= FEED_PAGE:
                break          # the first read only finds its bearings
            if since is not None and stamp < since:
                break
        else:
            if count >= FEED_PAGE * FEED_MAX_PAGES:
                self._lost('changed ports')
        self._mark = newest

    def _lost(self, feed):
        LOG.warning('The %s feed found more than %d changes since its last '
                    'read; asking for a full listing', feed,
                    FEED_PAGE * FEED_MAX_PAGES)
        self._request_listing()
