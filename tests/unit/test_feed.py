"""The ironic threads' cycles, driven one at a time against the fake ironic
(over HTTP, through the real client), and applied to a real view."""

import threading

import pytest

from pxefilterd import feed
from pxefilterd import policy
from pxefilterd import service
from pxefilterd import view as view_mod
from tests.fake_ironic import FakeIronic


@pytest.fixture
def fake():
    f = FakeIronic(max_limit=1000).start()
    yield f
    f.stop()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Rig:
    """A poller and a lister on one fake, with a view they feed."""

    def __init__(self, fake, **settings):
        self.fake = fake
        self.settings = service.Settings(**settings)
        self.client = fake.client()
        self.seq = feed.Sequence()
        self.clock = Clock()
        self.view = view_mod.IronicView()
        self.batches = []
        self.flushed = []
        self.listings_requested = 0
        self.poller = feed.Poller(self.client, self._posted,
                                  lambda: self.settings, self.seq,
                                  self.clock, request_listing=self._ask)
        self.lister = feed.Lister(self.client, self.batches.append,
                                  lambda: self.settings, self.seq,
                                  self.clock)

    def _ask(self):
        self.listings_requested += 1

    def _posted(self, batch):
        self.batches.append(batch)
        self.flushed.extend(batch.events)

    def poll(self):
        """One cycle, a poll interval after the previous one; return its
        events, those handed over early first."""
        self.clock.now += self.settings.poll_interval
        events = []
        self.flushed = []
        self.poller.soft_error = None     # as the thread's loop does
        self.complete = self.poller.cycle(events)
        events = self.flushed + events
        for event in events:
            self.view.apply(event)
        return events

    def list(self):
        events = []
        self.lister.cycle(events)
        for event in events:
            self.view.apply(event)

    def allowed(self):
        desired = policy.decide(self.view.snapshot(), self.settings.options)
        return {m for m, a in desired.macs.items()
                if a is policy.Action.ALLOW}, desired.unknown


def mac(i):
    return '52:54:00:00:%02x:%02x' % divmod(i, 256)


def enroll(fake, count, state='manageable'):
    nodes = []
    for i in range(count):
        node = fake.add_node(state)
        port = fake.add_port(node, mac(i))
        nodes.append((node, port, mac(i)))
    return nodes


def kinds(events):
    return [type(e).__name__ for e in events]


def test_first_cycle_needs_no_per_node_fetch(fake):
    nodes = enroll(fake, 3, state='inspect wait')
    rig = Rig(fake)
    rig.list()
    events = rig.poll()
    assert kinds(events)[0] == 'Inspection'
    assert 'NodePorts' not in kinds(events)
    assert rig.allowed()[0] == {m for _, _, m in nodes}


def test_node_deleted_mid_inspection_is_gone_not_an_error(fake):
    (a, _, ma), (b, _, mb) = enroll(fake, 2)
    rig = Rig(fake)
    rig.list()
    rig.poll()
    fake.set_node(a, provision_state='inspect wait')
    rig.poll()
    assert rig.allowed() == ({ma}, policy.Action.ALLOW)
    fake.delete_node(a)
    events = rig.poll()
    assert 'NodeGone' in kinds(events)
    assert ma not in rig.view.macs
    assert rig.allowed() == (set(), policy.Action.DENY)
    # and the next inspection is seen: nothing wedged
    fake.set_node(b, provision_state='inspect wait')
    rig.poll()
    assert rig.allowed() == ({mb}, policy.Action.ALLOW)


def test_every_page_of_inspecting_nodes(fake):
    fake.max_limit = 7
    nodes = enroll(fake, 30, state='inspect wait')
    rig = Rig(fake)
    rig.list()
    rig.poll()
    assert len(rig.view.nodes) == 30
    assert rig.allowed()[0] == {m for _, _, m in nodes}


def test_new_port_on_another_node_is_seen_by_the_feed(fake):
    (a, _, ma), (b, _, mb) = enroll(fake, 2)
    rig = Rig(fake)
    rig.list()
    fake.set_node(a, provision_state='inspect wait')
    rig.poll()
    new = fake.add_port(b, mac(99))
    rig.poll()
    assert rig.view.ports[new] == (mac(99), b)
    assert mac(99) not in rig.allowed()[0]


def test_address_change_is_seen_by_the_feed(fake):
    (a, pa, ma), = enroll(fake, 1)
    rig = Rig(fake)
    rig.list()
    fake.set_node(a, provision_state='inspect wait')
    rig.poll()
    fake.set_port(pa, address=mac(50))
    rig.poll()
    assert rig.allowed()[0] == {mac(50)}
    assert ma not in rig.view.macs


def test_port_moved_to_an_inspected_node_is_seen_by_the_feed(fake):
    (a, _, ma), (b, pb, mb) = enroll(fake, 2)
    rig = Rig(fake)
    rig.list()
    fake.set_node(a, provision_state='inspect wait')
    rig.poll()
    assert rig.allowed()[0] == {ma}
    fake.set_port(pb, node_uuid=a)
    rig.poll()
    assert rig.allowed()[0] == {ma, mb}


def test_feeds_rest_while_nothing_can_be_allowed(fake):
    enroll(fake, 2)
    rig = Rig(fake)
    rig.list()
    rig.poll()                  # the first read finds its bearings
    fake.requests.clear()
    rig.poll()
    assert [q.get('sort_key') for p, q in fake.requests
            if p == '/v1/ports'] == []
    rig.clock.now += feed.IDLE_FEED_INTERVAL
    fake.requests.clear()
    rig.poll()
    assert sorted(q.get('sort_key') for p, q in fake.requests
                  if p == '/v1/ports') == ['id', 'updated_at']


def test_feeds_page_back_after_a_burst_of_new_ports(fake):
    (a, _, _), = enroll(fake, 1, state='inspect wait')
    rig = Rig(fake)
    rig.list()
    rig.poll()
    other = fake.add_node()
    created = [fake.add_port(other, mac(100 + i))
               for i in range(3 * feed.FEED_PAGE)]
    rig.poll()
    assert all(rig.view.ports[p][1] == other for p in created)
    assert rig.listings_requested == 0


def test_more_new_ports_than_the_feed_reads_ask_for_a_listing(fake):
    enroll(fake, 1, state='inspect wait')
    rig = Rig(fake)
    rig.list()
    rig.poll()
    other = fake.add_node()
    for i in range(feed.FEED_PAGE * feed.FEED_MAX_PAGES + 5):
        fake.add_port(other, mac(1000 + i))
    rig.poll()
    assert rig.listings_requested == 1
    rig.poll()      # found its bearings again: no second request
    assert rig.listings_requested == 1


def test_updates_older_than_the_mark_are_not_read_again(fake):
    nodes = enroll(fake, 5, state='inspect wait')
    rig = Rig(fake)
    rig.list()
    rig.poll()
    for _, port, _ in nodes:
        fake.set_port(port, node_uuid=nodes[0][0])
    rig.poll()
    fake.requests.clear()
    rig.poll()
    updated = [q for p, q in fake.requests
               if q.get('sort_key') == 'updated_at']
    assert len(updated) == 1     # one page: everything is within the mark


def test_port_deleted_from_an_inspected_node_with_deny_unknown(fake):
    (a, pa, ma), = enroll(fake, 1)
    second = fake.add_port(a, mac(7))
    rig = Rig(fake, options=policy.Options(deny_unknown_macs=True))
    rig.list()
    rig.poll()
    fake.set_node(a, provision_state='inspect wait')
    rig.poll()
    assert rig.allowed()[0] == {ma, mac(7)}
    fake.delete_port(second)
    rig.poll()
    assert rig.allowed()[0] == {ma}


def test_per_node_fetches_keep_to_the_budget(fake):
    nodes = enroll(fake, 25)
    rig = Rig(fake, port_fetches_per_poll=10,
              options=policy.Options(deny_unknown_macs=True))
    rig.list()
    rig.poll()
    for node, _, _ in nodes:
        fake.set_node(node, provision_state='inspect wait')
    counts = []
    for _ in range(3):
        counts.append(kinds(rig.poll()).count('NodePorts'))
    assert counts == [10, 10, 10]   # 25 entered, then refreshes in turn
    # every node allowed from the first poll on, fetched or not
    assert len(rig.allowed()[0]) == 25


def test_nodes_that_left_are_fetched_first(fake):
    nodes = enroll(fake, 15)
    rig = Rig(fake, port_fetches_per_poll=2,
              options=policy.Options(deny_unknown_macs=True))
    rig.list()
    rig.poll()
    for node, _, _ in nodes:
        fake.set_node(node, provision_state='inspect wait')
    rig.poll()
    fake.delete_node(nodes[14][0])
    events = rig.poll()
    assert isinstance(events[1], view_mod.NodeGone)
    assert events[1].node == nodes[14][0]


def test_a_failing_fetch_keeps_the_events_before_it_and_retries(fake):
    (a, _, ma), = enroll(fake, 1)
    rig = Rig(fake)
    rig.list()
    rig.poll()
    fake.set_node(a, provision_state='inspect wait')
    rig.poll()
    fake.set_node(a, provision_state='manageable')
    fake.broken = {'ports'}
    events = rig.poll()
    # the inspection answer went ahead of the cycle's end, as always
    assert kinds(events) == ['Inspection']
    assert rig.poller.soft_error is not None and not rig.complete
    fake.broken = set()
    rig.clock.now += 2                            # past the node's backoff
    assert 'NodePorts' in kinds(rig.poll())       # the fetch was kept
    assert rig.complete


def test_worker_posts_errors_with_backoff_and_recovers(fake):
    enroll(fake, 1)
    rig = Rig(fake, poll_interval=0.01)
    posted = []
    got = threading.Event()

    def post(batch):
        if batch.error is None and not batch.complete:
            return       # an inspection answer sent ahead of its cycle
        posted.append(batch)
        if len(posted) >= 4:
            got.set()

    worker = feed.Poller(rig.client, post, lambda: rig.settings, rig.seq)
    fake.failures = 2
    worker.start()
    try:
        assert got.wait(10)
    finally:
        worker.stop()
        worker.join(5)
    assert [b.complete for b in posted[:3]] == [False, False, True]
    assert posted[0].error is not None and posted[0].retry_in >= 1.0
    assert posted[1].retry_in >= 2.0


def test_listing_pages_carry_their_own_sequence_numbers(fake):
    fake.max_limit = 10
    enroll(fake, 25)
    rig = Rig(fake)
    events = []
    rig.lister.cycle(events)
    listing = events[0]
    assert [count for count, _ in listing.pages] == [10, 20, 25]
    seqs = [listing.seq] + [s for _, s in listing.pages]
    assert seqs == sorted(set(seqs))
    assert listing.end == listing.pages[-1][1]


def states_asked(fake):
    return [q['provision_state'] for p, q in fake.requests
            if p == '/v1/nodes']


def test_idle_fleet_asks_for_inspecting_every_few_cycles(fake):
    enroll(fake, 2)
    rig = Rig(fake)
    rig.list()
    fake.requests.clear()
    for _ in range(2 * feed.INSPECTING_EVERY):
        rig.poll()
    asked = states_asked(fake)
    assert asked.count('inspect wait') == 2 * feed.INSPECTING_EVERY
    assert asked.count('inspecting') == 2


def test_ramdisk_data_processing_stays_inspection_until_done(fake):
    """inspect wait -> inspecting (the ramdisk posted its data) ->
    manageable: allowed until manageable, denied at the next cycle."""
    (a, _, ma), = enroll(fake, 1)
    rig = Rig(fake)
    rig.list()
    for _ in range(3):
        rig.poll()
    fake.set_node(a, provision_state='inspect wait')
    rig.poll()
    assert rig.allowed()[0] == {ma}
    fake.set_node(a, provision_state='inspecting')
    rig.poll()          # left inspect wait: inspecting asked at once
    assert rig.allowed()[0] == {ma}
    fake.set_node(a, provision_state='manageable')
    rig.poll()          # a node is inspecting: asked at every cycle
    assert rig.allowed()[0] == set()


def test_listings_take_at_most_their_budget_of_ironic(fake):
    enroll(fake, 3)
    rig = Rig(fake, sync_period=900)
    clock = rig.clock
    real_listing = rig.client.listing

    def slow_listing(seq):
        clock.now += 30.0          # "took" 30 s, as 120k ports would
        return real_listing(seq)

    rig.client.listing = slow_listing
    assert rig.lister.interval() == 900
    rig.list()
    assert rig.lister.interval() == pytest.approx(30 / feed.LISTING_BUDGET)
    rig.settings = service.Settings(sync_period=3600)
    assert rig.lister.interval() == 3600


IB = 'ff:00:00:00:00:00:02:00:00:02:c9:00:00:02:c9:03:00:0a:0b:%02x'


def test_infiniband_client_ids_follow_their_ports(fake):
    """A port's client id is a second key with its port's verdict: allowed
    while its node is inspected, seen by the feeds when it is added,
    changed or removed."""
    (a, pa, ma), (b, pb, mb) = enroll(fake, 2)
    fake.set_port(pa, extra={'client-id': IB % 1})
    rig = Rig(fake)
    rig.list()
    rig.poll()
    assert rig.view.macs['id:' + IB % 1] == a
    fake.set_node(a, provision_state='inspect wait')
    rig.poll()
    assert rig.allowed()[0] == {ma, 'id:' + IB % 1}
    # a new IB port on the inspected node: found by the new-ports feed
    fake.add_port(a, '00:02:c9:0a:0b:02', extra={'client-id': IB % 2})
    rig.poll()
    assert 'id:' + IB % 2 in rig.allowed()[0]
    # the client id changed, then removed: the updated-ports feed
    fake.set_port(pa, extra={'client-id': IB % 3})
    rig.poll()
    assert 'id:' + IB % 3 in rig.allowed()[0]
    assert 'id:' + IB % 1 not in rig.view.macs
    fake.set_port(pa, extra={})
    rig.poll()
    assert 'id:' + IB % 3 not in rig.view.macs
    assert rig.view.port_of('id:' + IB % 2)[1] == a


def test_client_ids_do_not_count_as_ports_of_a_feed_page(fake):
    """Ports with client ids yield two entries each; the new-ports feed
    must still count ports, or it gives up (and asks for a full listing)
    after half the ports it may read."""
    (a, _, _), = enroll(fake, 1)
    rig = Rig(fake)
    rig.list()
    fake.set_node(a, provision_state='inspect wait')
    rig.poll()
    count = feed.FEED_PAGE * feed.FEED_MAX_PAGES * 3 // 5
    for i in range(count):
        fake.add_port(a, mac(1000 + i), extra={
            'client-id': 'ff:00:00:00:00:00:02:00:00:02:c9:00:00:02:c9:03'
                         ':00:0a:%02x:%02x' % divmod(i, 256)})
    rig.poll()
    assert rig.listings_requested == 0
    assert all(mac(1000 + i) in rig.view.macs for i in range(count))


def test_an_idle_fleet_is_polled_less_often(fake):
    """No node inspected: every idle_poll_interval; from the poll that sees
    one until the one after the last left: every poll_interval."""
    (a, _, _), = enroll(fake, 1)
    rig = Rig(fake, poll_interval=1.0, idle_poll_interval=1.5)
    assert rig.poller.interval() == 1.0      # nothing known yet
    rig.list()
    rig.poll()
    assert rig.poller.interval() == 1.5
    fake.set_node(a, provision_state='inspect wait')
    rig.poll()
    assert rig.poller.interval() == 1.0
    fake.set_node(a, provision_state='manageable')
    rig.settings.port_fetches_per_poll = 0
    rig.poll()            # left, and its ports not fetched yet: still fast
    assert rig.poller.interval() == 1.0
    rig.settings.port_fetches_per_poll = 10
    rig.poll()
    assert rig.poller.interval() == 1.5
    rig.settings.options = policy.Options(auto_discovery=True)
    rig.poll()
    assert rig.poller.interval() == 1.0
    rig.settings.options = policy.Options()
    rig.settings.idle_poll_interval = 0
    rig.poll()
    assert rig.poller.interval() == 1.0


def test_one_failing_node_fetch_does_not_hold_the_poll(fake):
    """The ports of one node fail (a 500): the others are fetched, the
    inspection answers keep coming at the poll interval, the bad node is
    retried with its own backoff, and no cycle counts as complete (contact
    with ironic) until it is fetched."""
    (a, _, ma), (b, _, mb), (c, _, mc) = enroll(fake, 3)
    rig = Rig(fake, poll_interval=1.0, idle_poll_interval=0)
    rig.list()
    rig.poll()
    fake.set_node(a, provision_state='inspect wait')
    fake.set_node(b, provision_state='inspect wait')
    rig.poll()
    answer = fake.answer

    def broken_a(path, query, version=None):
        if path == '/v1/ports' and query.get('node_uuid') == a:
            return 500, {'error_message': 'broken node (fake)'}
        return answer(path, query, version)

    fake.answer = broken_a
    fake.set_node(a, provision_state='manageable')
    fake.set_node(b, provision_state='manageable')
    events = rig.poll()
    assert rig.poller.soft_error is not None and not rig.complete
    assert [e.node for e in events if type(e).__name__ == 'NodePorts'] == [b]
    # the inspection answer was applied: both are denied already
    assert rig.allowed() == (set(), policy.Action.DENY)
    # c enters inspection while a's fetch keeps failing: seen at once
    fake.set_node(c, provision_state='inspect wait')
    rig.poll()
    assert rig.allowed()[0] == {mc}
    assert not rig.complete
    assert rig.poller.interval() == 1.0     # no backoff of the whole poll
    fake.answer = answer
    rig.clock.now += 5
    events = rig.poll()
    assert [e.node for e in events if type(e).__name__ == 'NodePorts'] == [a]
    assert rig.complete


def _slow(rig, method, seconds):
    """Make ``rig.client.<method>`` take ``seconds()`` of the rig's clock
    (``seconds`` is asked once per call, with the call's arguments)."""
    real = getattr(rig.client, method)

    def timed(*args, **kwargs):
        rig.clock.now += seconds(*args, **kwargs)
        result = real(*args, **kwargs)
        return list(result) if method == 'ports' else result
    setattr(rig.client, method, timed)


def feed_reads(fake):
    return sorted(q.get('sort_key') for p, q in fake.requests
                  if p == '/v1/ports' and 'sort_key' in q)


def test_feeds_are_read_every_cycle_however_long_the_poll_takes(fake):
    # Cycles start a poll interval apart; the inspection poll before the
    # feeds takes 10 or 60 ms in turn.  Timed from their own reads, the
    # feeds skipped every other cycle (a new port on a node not inspected
    # waited up to two cycles).
    enroll(fake, 1, state='inspect wait')
    rig = Rig(fake)
    rig.list()
    durations = iter([0.06, 0.01] * 10)
    _slow(rig, 'inspection_nodes', lambda *a, **k: next(durations))
    start = rig.clock.now
    for cycle in range(1, 7):
        rig.clock.now = start + cycle * rig.settings.poll_interval
        fake.requests.clear()
        events = []
        rig.poller.cycle(events)
        assert feed_reads(fake) == ['id', 'updated_at'], cycle


def test_one_slow_read_does_not_space_a_feed_out(fake):
    # A read slowed down by a busy ironic (0.5 s: a full listing is under
    # way) would, as the feed's cost, space its reads 10 s apart.
    enroll(fake, 1, state='inspect wait')
    rig = Rig(fake)
    rig.list()
    costs = {'id': [0.01, 0.01, 0.5, 0.01, 0.01, 0.01]}

    def cost(params, **kwargs):
        key = params.get('sort_key')
        return costs[key].pop(0) if key in costs and costs[key] else 0.0
    _slow(rig, 'ports', cost)
    reads = []
    for _ in range(6):
        fake.requests.clear()
        rig.poll()
        reads.append(feed_reads(fake).count('id'))
    assert reads == [1] * 6


def steady_reads(fake, key, seconds, cycles=20):
    """Poll ``cycles`` times with each read of feed ``key`` costing
    ``seconds`` of ironic's time, once its cost is known; return how many
    reads there were and the time they were spread over."""
    enroll(fake, 1, state='inspect wait')
    rig = Rig(fake)
    rig.list()
    _slow(rig, 'ports', lambda params, **kwargs:
          seconds if params.get('sort_key') == key else 0.0)
    rig.poll()
    rig.poll()      # its cost is known from the second read on
    first = rig.clock.now
    reads = 0
    for _ in range(cycles):
        fake.requests.clear()
        rig.poll()
        reads += feed_reads(fake).count(key)
    return reads, rig.clock.now - first


def test_a_costly_feed_is_read_within_its_budget(fake):
    # 100 ms a read, every read: at most FEED_BUDGET of ironic's time.
    cycles = 20
    reads, elapsed = steady_reads(fake, 'updated_at', 0.1, cycles)
    assert reads * 0.1 / elapsed <= feed.FEED_BUDGET
    assert reads >= cycles // 4          # and not starved either


def test_a_feed_just_over_its_budget_is_not_read_every_cycle(fake):
    # 55 ms a read at a 1 s poll is 5.5 % of ironic's time: every other
    # cycle, not every cycle (no slack on the budget).
    reads, elapsed = steady_reads(fake, 'id', 0.055)
    assert reads * 0.055 / elapsed <= feed.FEED_BUDGET
    assert reads >= 8


def test_a_slow_first_read_does_not_space_a_feed_out(fake):
    # The first reads run beside the start-up listing: a 1 s first read
    # alone would mean one read every 20 s.
    enroll(fake, 1, state='inspect wait')
    rig = Rig(fake)
    rig.list()
    costs = [1.0]

    def cost(params, **kwargs):
        if params.get('sort_key') != 'id':
            return 0.0
        return costs.pop(0) if costs else 0.01
    _slow(rig, 'ports', cost)
    reads = []
    for _ in range(4):
        fake.requests.clear()
        rig.poll()
        reads.append(feed_reads(fake).count('id'))
    assert reads == [1, 1, 1, 1]


def test_address_change_of_an_old_port_is_seen_by_the_changed_feed(fake):
    # The oldest port is not on the new-ports feed's page: only the
    # changed-ports feed (sort_key=updated_at) can see it.
    nodes = enroll(fake, feed.FEED_PAGE + 10)
    (a, _, ma), (b, pb, mb) = nodes[-1], nodes[0]
    rig = Rig(fake)
    rig.list()
    fake.set_node(a, provision_state='inspect wait')
    rig.poll()
    assert rig.allowed() == ({ma}, policy.Action.ALLOW)
    fake.set_port(pb, address=mac(5000))
    fake.requests.clear()
    rig.poll()
    assert rig.view.ports[pb] == (mac(5000), b)
    assert mac(5000) not in rig.allowed()[0]     # a known port: denied
    assert mb not in rig.view.macs               # unknown again
    new_page = [q for p, q in fake.requests
                if p == '/v1/ports' and q.get('sort_key') == 'id']
    assert new_page and all(int(q['limit']) == feed.FEED_PAGE
                            for q in new_page)


def test_a_copied_client_id_is_denied_not_hijacked(fake):
    """ironic keeps client ids unique nowhere: a port on a node in inspect
    wait copying the client id of an active node's port does not get it
    allowed; the key is denied while two ports claim it, and explain says
    why."""
    (a, pa, ma), (b, pb, mb) = enroll(fake, 2)
    fake.set_port(pa, extra={'client-id': IB % 1})
    fake.set_node(a, provision_state='active')
    fake.set_node(b, provision_state='inspect wait')
    rig = Rig(fake)
    rig.list()
    rig.poll()
    key = 'id:' + IB % 1
    assert rig.allowed()[0] == {mb}
    copy = fake.add_port(b, mac(7), extra={'client-id': IB % 1})
    rig.poll()                    # the new-ports feed
    assert rig.allowed()[0] == {mb, mac(7)}
    rig.list()                    # a full listing: the copy comes last
    assert rig.allowed()[0] == {mb, mac(7)}
    snap = rig.view.snapshot()
    assert snap.conflicts == {key: tuple(sorted([(pa, a), (copy, b)]))}
    why = policy.explain(key, snap, rig.settings.options)
    assert (why.action, why.rule) == (policy.Action.DENY, 'conflict')
    assert pa in why.text and copy in why.text
    # the copy removed: one claim again, the active node's (denied)
    fake.set_port(copy, extra={})
    rig.poll()
    assert rig.view.snapshot().conflicts == {}
    assert rig.view.port_of(key) == (pa, a)
    assert rig.allowed()[0] == {mb, mac(7)}
    fake.set_node(a, provision_state='inspect wait')
    rig.poll()
    assert rig.allowed()[0] == {ma, mb, mac(7), key}
