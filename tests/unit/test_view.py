"""The view of ironic: every operation, and the merge rules between them."""

import itertools
import random

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from pxefilterd import policy
from pxefilterd import view as view_mod
from pxefilterd.view import (Inspection, IronicView, Listing, NodeGone,
                             NodePorts, PortChanges)

NA, NB, NC = ('aaaaaaaa-0000-4000-8000-00000000000%d' % i for i in (1, 2, 3))
P1, P2, P3, P4 = ('bbbbbbbb-0000-4000-8000-00000000000%d' % i
                  for i in range(1, 5))
M1, M2, M3, M4 = ('52:54:00:00:00:%02x' % i for i in range(1, 5))
WAIT = policy.NodeInfo('inspect wait', 'agent')
IB1, IB2 = 'id:ff:00:01', 'id:ff:00:02'


def listed(seq=0, **extra):
    v = IronicView()
    ports = {P1: (M1, NA), P2: (M2, NB)}
    ports.update(extra)
    v.apply(Listing(seq, ports))
    return v


def test_complete_needs_a_listing_and_an_answer():
    v = IronicView()
    assert not v.complete
    v.apply(Listing(0, {}))
    assert not v.complete
    v.apply(Inspection(1, {}))
    assert v.complete


def test_listing_replaces_everything():
    v = listed()
    assert v.macs == {M1: NA, M2: NB}
    v.apply(Listing(5, {P3: (M3, NC)}))
    assert v.macs == {M3: NC}
    assert v.ports_of(NA) == {}


def test_snapshot_shares_the_mappings():
    v = listed()
    v.apply(Inspection(1, {NA: WAIT}))
    snap = v.snapshot()
    assert snap.ports is v.macs and snap.nodes is v.nodes
    assert policy.inspected_nodes(snap, policy.Options()) == {NA}


def test_inspection_answer_replaces_and_old_answers_are_dropped():
    v = listed()
    assert v.apply(Inspection(3, {NA: WAIT}))
    assert not v.apply(Inspection(2, {NB: WAIT}))    # older: dropped
    assert v.nodes == {NA: WAIT}
    assert v.apply(Inspection(4, {}))
    assert v.nodes == {}
    assert not v.apply(Inspection(5, {}))    # same answer: no change


def test_node_ports_replace_the_ports_of_that_node_only():
    v = listed()
    v.apply(NodePorts(1, NA, {P3: (M3, NA)}))
    assert v.macs == {M2: NB, M3: NA}
    assert v.ports_of(NA) == {P3: (M3, NA)}


def test_node_ports_ignore_entries_of_other_nodes():
    v = listed()
    v.apply(NodePorts(1, NA, {P1: (M1, NA), P3: (M3, NB)}))
    assert v.macs == {M1: NA, M2: NB}


def test_feed_creates_edits_and_moves_ports():
    v = listed()
    v.apply(PortChanges(1, {P3: (M3, NC)}))          # created
    assert v.macs[M3] == NC
    v.apply(PortChanges(2, {P1: (M4, NA)}))          # address changed
    assert M1 not in v.macs and v.macs[M4] == NA
    v.apply(PortChanges(3, {P2: (M2, NA)}))          # moved to another node
    assert v.macs[M2] == NA
    assert set(v.ports_of(NA)) == {P1, P2}
    assert v.ports_of(NB) == {}


def test_feed_entry_that_changes_nothing_is_not_a_change():
    v = listed()
    assert not v.apply(PortChanges(1, {P1: (M1, NA)}))


def test_a_mac_taken_by_a_new_port_forgets_the_old_port():
    """ironic keeps MACs unique: P1 was deleted and P3 created with its MAC
    (or P1 readdressed and P3 given the MAC): P3 owns it now, and a later
    edit of P1 must not take M1 away from P3."""
    v = listed()
    v.apply(PortChanges(1, {P3: (M1, NC)}))
    assert v.macs[M1] == NC
    assert P1 not in v.ports
    v.apply(PortChanges(2, {P1: (M4, NA)}))
    assert v.macs == {M1: NC, M2: NB, M4: NA}


def test_swapped_addresses():
    v = listed()
    v.apply(PortChanges(1, {P1: (M2, NA), P2: (M1, NB)}))
    assert v.macs == {M2: NA, M1: NB}


def test_node_gone_forgets_node_and_ports():
    v = listed()
    v.apply(Inspection(1, {NA: WAIT}))
    assert v.apply(NodeGone(2, NA))
    assert v.macs == {M2: NB}
    assert v.nodes == {}
    # an answer sent before the deletion was seen still lists it: ignored
    v.apply(Inspection(2, {NA: WAIT}))
    assert v.nodes == {}
    # a later answer would not list it at all; but if it did, it is newer
    v.apply(Inspection(3, {NA: WAIT}))
    assert v.nodes == {NA: WAIT}


def test_feed_entry_of_a_gone_node_read_before_the_404_is_ignored():
    v = listed()
    v.apply(NodeGone(5, NA))
    v.apply(PortChanges(4, {P3: (M3, NA)}))
    assert M3 not in v.macs


def test_port_events_older_than_the_listing_are_dropped():
    v = listed(seq=10)
    v.apply(PortChanges(9, {P3: (M3, NC)}))
    v.apply(NodePorts(9, NA, {}))
    assert v.macs == {M1: NA, M2: NB}


def test_listing_keeps_what_newer_events_said():
    """A listing read at seq 10 (one page) landed after events 11-14."""
    v = listed(seq=0)
    v.apply(PortChanges(11, {P3: (M3, NC)}))        # created after start
    v.apply(PortChanges(12, {P2: (M4, NB)}))        # readdressed
    v.apply(NodePorts(13, NA, {P4: (M1, NA)}))      # NA's ports refetched
    v.apply(NodeGone(14, NC))                       # ... and NC deleted
    stale = {P1: (M1, NA), P2: (M2, NB), P3: (M3, NC)}
    v.apply(Listing(10, stale))
    assert v.macs == {M1: NA, M4: NB}
    assert set(v.ports) == {P4, P2}


def test_listing_drops_ports_not_seen_and_not_touched_since():
    v = listed(seq=0)
    v.apply(PortChanges(5, {P3: (M3, NC)}))
    v.apply(Listing(10, {P1: (M1, NA)}))            # P2, P3 deleted
    assert v.macs == {M1: NA}


def test_port_created_during_a_listing_and_deleted_before_its_page():
    """P3 was created (feed, seq 11) while the listing ran (pages at 12):
    absent from the pages, it was deleted before the last page."""
    v = listed(seq=0)
    v.apply(PortChanges(11, {P3: (M3, NC)}))
    v.apply(Listing(10, {P1: (M1, NA), P2: (M2, NB)}, [(2, 12)]))
    assert M3 not in v.macs


def test_port_created_after_the_last_page_is_kept():
    v = listed(seq=0)
    v.apply(PortChanges(14, {P3: (M3, NC)}))
    v.apply(Listing(10, {P1: (M1, NA), P2: (M2, NB)}, [(2, 12)]))
    assert v.macs[M3] == NC


def test_port_created_while_the_last_page_was_on_its_way_is_kept():
    """The last page was asked for at 12 and arrived later; P3 was created
    at 13 (feed): the page may or may not have been read after that."""
    v = listed(seq=0)
    v.apply(PortChanges(13, {P3: (M3, NC)}))
    v.apply(Listing(10, {P1: (M1, NA), P2: (M2, NB)}, [(2, 12)]))
    assert v.macs[M3] == NC


def test_mac_moved_after_its_page_was_read():
    """P1 lost M1 and P3 took it (feed, seq 11) after the page listing P1
    (seq 10), before the page listing P3 (seq 12)."""
    v = listed(seq=0)
    v.apply(PortChanges(11, {P3: (M1, NC)}))
    v.apply(Listing(9, {P1: (M1, NA), P2: (M2, NB), P3: (M1, NC)},
                    [(2, 10), (3, 12)]))
    assert v.macs[M1] == NC
    assert P1 not in v.ports


def test_mac_moved_back_before_its_page_was_read():
    """P3 took M1 at seq 11, but the page read at 12 shows P1 with M1
    again: the page is fresher, P3 lost it."""
    v = listed(seq=0)
    v.apply(PortChanges(11, {P3: (M1, NC)}))
    v.apply(Listing(9, {P1: (M1, NA), P2: (M2, NB)}, [(2, 12)]))
    assert v.macs[M1] == NA
    assert P3 not in v.ports


def test_mac_claimed_by_an_event_then_listed_on_another_port_later():
    """P3 took M4 at seq 11 (feed); the page read at 12 shows P4 with M4:
    P3 has moved on since (its next change is not seen yet), P4 owns M4."""
    v = listed(seq=0, **{P3: (M3, NC)})
    v.apply(PortChanges(11, {P3: (M4, NC)}))
    v.apply(Listing(9, {P1: (M1, NA), P3: (M3, NC), P4: (M4, NA)},
                    [(2, 10), (3, 12)]))
    assert v.macs[M4] == NA
    assert P3 not in v.ports


def test_page_fresher_than_the_feed_wins():
    v = listed(seq=0)
    v.apply(PortChanges(11, {P2: (M4, NB)}))
    v.apply(Listing(10, {P1: (M1, NA), P2: (M3, NB)}, [(1, 10), (2, 12)]))
    assert v.ports[P2] == (M3, NB)


def test_ports_of_a_node_deleted_after_their_page_are_dropped():
    v = listed(seq=0)
    v.apply(NodeGone(11, NA))
    v.apply(Listing(10, {P1: (M1, NA), P2: (M2, NB)}, [(2, 10)]))
    assert v.macs == {M2: NB}


def test_older_listing_after_a_newer_one_is_dropped():
    v = listed(seq=10)
    v.apply(Listing(5, {}))
    assert v.macs == {M1: NA, M2: NB}


def test_two_ports_with_one_mac_on_two_pages_keep_the_later():
    """A MAC deleted on one port and given to a new one between two pages:
    ironic never had both at once."""
    v = IronicView()
    v.apply(Listing(0, {P1: (M1, NA), P2: (M1, NB)}, [(1, 1), (2, 2)]))
    assert v.macs == {M1: NB}
    assert set(v.ports) == {P2}
    assert v.snapshot().conflicts == {}


def test_two_ports_with_one_mac_in_one_answer_are_a_conflict():
    """Should ironic ever return one MAC on two ports, neither is
    trusted."""
    v = IronicView()
    v.apply(Listing(0, {P1: (M1, NA), P2: (M1, NB), P3: (M3, NC)}))
    assert v.snapshot().conflicts == {M1: ((P1, NA), (P2, NB))}
    assert set(v.ports) == {P1, P2, P3}
    v.apply(PortChanges(1, {P2: (M2, NB)}))        # P2 readdressed
    assert v.snapshot().conflicts == {}
    assert v.macs == {M1: NA, M2: NB, M3: NC}
    v.apply(PortChanges(2, {P3: (M4, NC), P4: (M4, NA)}))
    assert v.snapshot().conflicts == {M4: ((P3, NC), (P4, NA))}
    v.apply(NodePorts(3, NC, {}))                  # P3 deleted
    assert v.snapshot().conflicts == {}
    assert v.macs == {M1: NA, M2: NB, M4: NA}


def test_every_claim_on_a_client_id_is_kept():
    """ironic does not keep client ids unique: a later claim does not take
    one from an earlier port; both are a conflict until one lets go."""
    c1, c2 = view_mod.client_id_port(P1), view_mod.client_id_port(P2)
    v = listed(**{c1: (IB1, NA)})
    v.apply(PortChanges(1, {P2: (M2, NB), c2: (IB1, NB)}))
    assert v.snapshot().conflicts == {IB1: ((P1, NA), (P2, NB))}
    v.apply(Listing(2, {P1: (M1, NA), c1: (IB1, NA), P2: (M2, NB),
                        c2: (IB1, NB)}, [(2, 2), (4, 3)]))
    assert v.snapshot().conflicts == {IB1: ((P1, NA), (P2, NB))}
    v.apply(PortChanges(5, {P1: (M1, NA)}))        # P1 has none any more
    assert v.snapshot().conflicts == {}
    assert v.port_of(IB1) == (P2, NB)


def test_journals_are_pruned_by_each_listing():
    v = listed(seq=0)
    v.apply(PortChanges(5, {P3: (M3, NC)}))
    v.apply(NodeGone(6, NB))
    v.apply(Listing(10, {P1: (M1, NA)}))
    assert not (v._touched or v._gone)


def test_unknown_event_type():
    with pytest.raises(TypeError):
        IronicView().apply(object())


# -- a randomised check against a model of ironic ----------------------------

class Ironic:
    """The truth: ports with increasing ids, changed at random; a listing
    reads pages in id order with a marker, as ironic's does."""

    def __init__(self, rng):
        self.rng = rng
        self.ports = {}          # uuid -> (mac, node)
        self.ids = {}            # uuid -> id
        self.deleted = set()
        self.counter = itertools.count()
        self.nodes = ['n%d' % i for i in range(4)]

    def create(self):
        i = next(self.counter)
        uuid = 'p%04d' % i
        self.ids[uuid] = i
        self.ports[uuid] = ('52:54:00:00:%02x:%02x' % divmod(i, 256),
                            self.rng.choice(self.nodes))
        return {uuid: self.ports[uuid]}

    def change(self):
        """One random change; return what the feed reports (None for a
        deletion: it leaves no trace)."""
        if not self.ports or self.rng.random() < 0.35:
            return self.create()
        uuid = self.rng.choice(sorted(self.ports))
        mac, node = self.ports[uuid]
        roll = self.rng.random()
        if roll < 0.3:
            i = next(self.counter)
            self.ports[uuid] = ('52:54:00:00:%02x:%02x' % divmod(i, 256),
                                node)
        elif roll < 0.6:
            self.ports[uuid] = (mac, self.rng.choice(self.nodes))
        else:
            del self.ports[uuid]
            self.deleted.add(uuid)
            return None
        return {uuid: self.ports[uuid]}

    def page(self, after, size):
        ids = sorted((self.ids[u], u) for u in self.ports
                     if self.ids[u] > after)[:size]
        return [(u, self.ports[u]) for _, u in ids]


@pytest.mark.parametrize('seed', range(60))
def test_listing_during_changes_loses_no_update(seed):
    """Ports change between the pages of a listing; every change with a
    trace reaches the view through the feed, whose events land before or
    after the listing.  Afterwards every port ironic has is in the view
    exactly as ironic has it; the only extra ports are deleted ones (no
    trace: the next listing drops them)."""
    rng = random.Random(seed)
    truth = Ironic(rng)
    for _ in range(25):
        truth.create()
    seq = itertools.count()
    v = IronicView()
    v.apply(Listing(next(seq), dict(truth.ports)))
    feed = []
    start = next(seq)
    ports, pages, after = {}, [], -1
    while True:
        for _ in range(rng.randrange(3)):
            change = truth.change()
            if change is not None:
                feed.append(PortChanges(next(seq), change))
        page_seq = next(seq)
        page = truth.page(after, 4)
        ports.update(page)
        pages.append((len(ports), page_seq))
        if len(page) < 4:
            break
        after = truth.ids[page[-1][0]]
    listing = Listing(start, ports, pages)
    for _ in range(rng.randrange(4)):
        change = truth.change()
        if change is not None:
            feed.append(PortChanges(next(seq), change))
    split = rng.randrange(len(feed) + 1)
    for event in feed[:split]:
        v.apply(event)
    v.apply(listing)
    for event in feed[split:]:
        v.apply(event)
    for uuid, port in truth.ports.items():
        assert v.ports.get(uuid) == port, uuid
    assert set(v.ports) - set(truth.ports) <= truth.deleted
    for mac, node in truth.ports.values():
        assert v.macs[mac] == node
    v.apply(Listing(next(seq), dict(truth.ports)))
    assert v.ports == truth.ports
    assert v.macs == {mac: node for mac, node in truth.ports.values()}


def test_module_documents_every_event():
    for event in (Listing, Inspection, NodePorts, PortChanges, NodeGone):
        assert ':class:`%s`' % event.__name__ in view_mod.__doc__


# -- claims: any sequence of events keeps them consistent ---------------------

UUIDS = [P1, P2, P3, P4] + [view_mod.client_id_port(p) for p in (P1, P2)]
NODES = [NA, NB, None]
# a port's own UUID holds a MAC, its derived one a client id
some_ports = st.lists(st.tuples(st.sampled_from(UUIDS),
                                st.sampled_from([0, 1]),
                                st.sampled_from(NODES)), max_size=6).map(
    lambda items: {uuid: (((IB1, IB2) if view_mod.is_derived(uuid)
                           else (M1, M2))[i], node)
                   for uuid, i, node in items})
event = st.one_of(
    st.builds(lambda p: ('listing', p), some_ports),
    st.builds(lambda p: ('changes', p), some_ports),
    st.builds(lambda n, p: ('node', n, p), st.sampled_from([NA, NB]),
              some_ports),
    st.builds(lambda n: ('gone', n), st.sampled_from([NA, NB])))


def check_claims(v):
    """Every key's holders, owner, node and conflict agree with ports."""
    holders = {}
    for uuid, (key, node) in v.ports.items():
        holders.setdefault(key, {})[uuid] = node
    assert set(v.macs) == set(holders)
    conflicts = v.snapshot().conflicts
    for key, held in holders.items():
        uuid, node = v.port_of(key)
        assert v.macs[key] == node
        if len(held) > 1:
            assert sorted(conflicts[key], key=str) == sorted(
                ((view_mod.port_uuid(u), n) for u, n in held.items()),
                key=str)
        else:
            assert key not in conflicts
    assert set(conflicts) <= set(holders)


@settings(max_examples=500, deadline=None)
@given(st.lists(event, max_size=12), st.sampled_from([(), (NA,), (NA, NB)]))
def test_claims_stay_consistent_and_conflicts_are_denied(events, inspecting):
    v = IronicView()
    for seq, ev in enumerate(events):
        if ev[0] == 'listing':
            v.apply(Listing(seq, ev[1]))
        elif ev[0] == 'changes':
            v.apply(PortChanges(seq, ev[1]))
        elif ev[0] == 'node':
            v.apply(NodePorts(seq, ev[1], ev[2]))
        else:
            v.apply(NodeGone(seq, ev[1]))
        check_claims(v)
    v.apply(Inspection(len(events), dict.fromkeys(inspecting, WAIT)))
    snap = v.snapshot()
    options = policy.Options()
    desired = policy.decide(snap, options)
    for key in snap.ports:
        why = policy.explain(key, snap, options)
        assert why.action is desired.macs[key]
        if key in snap.conflicts:
            assert (why.action, why.rule) == (policy.Action.DENY, 'conflict')
    # one answer (a single-page listing): conflicts are exactly the keys
    # two ports hold in it
    last = events[-1][1] if events and events[-1][0] == 'listing' else None
    if last is not None:
        counts = {}
        for key, _ in last.values():
            counts[key] = counts.get(key, 0) + 1
        assert set(snap.conflicts) == {k for k, n in counts.items() if n > 1}
