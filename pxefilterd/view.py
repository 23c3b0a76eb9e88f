"""What pxefilterd knows of ironic: a plain object, changed by events.

Each source of truth has one event type and one operation:

=================  =====================================================
event              what it says
=================  =====================================================
:class:`Listing`   every port ironic has (the full listing, a backstop)
:class:`Inspection`  every node in an inspection state (the poll)
:class:`NodePorts` every port of one node (a per-node fetch)
:class:`PortChanges`  some ports as they are now (the change feeds)
:class:`NodeGone`  a node does not exist any more (a 404)
=================  =====================================================

Every event carries ``seq``: a number taken from one counter when its
request was *sent*, so a higher ``seq`` means fresher information.  The
rules that keep the view consistent although the sources overlap and
arrive out of order:

* a full listing is read page by page over seconds (23 s at 100k ports);
  whatever a newer event said about a port or a node after the listing
  started wins over the listing's pages;
* port events older than the last adopted listing are dropped (every page
  of the listing was read after them);
* an inspection answer older than the one adopted is dropped;
* ironic keeps MAC addresses unique: the newest port seen with a MAC owns
  it, and an older port claiming the same MAC is forgotten (it was deleted
  or readdressed meanwhile) -- unless one answer (a page, a node's ports,
  a feed's page) holds the MAC on both: then both are kept, a conflict;
* ironic does *not* keep client ids (``extra['client-id']``) unique:
  every port claiming one is kept, and two claims are a conflict.  A
  conflict lasts until one of the ports lets go of the key (an edit, a
  deletion seen by a node fetch or the next listing);
  :func:`pxefilterd.policy.decide` denies the key meanwhile.

Nothing here does I/O; :meth:`IronicView.snapshot` feeds
:func:`pxefilterd.policy.decide`.
"""

import dataclasses
import typing

from pxefilterd import macs as macs_mod
from pxefilterd import policy

#: port UUID -> (key: a normalised MAC or client id, node UUID or None)
Ports = typing.Dict[str, typing.Tuple[str, typing.Optional[str]]]

#: An InfiniBand port has two keys: its MAC, and the client id in its
#: ``extra['client-id']`` (IPoIB DHCP requests match only that).  The second
#: is carried as a port of its own under this derived UUID.
CLIENT_ID_SUFFIX = '/client-id'


def client_id_port(uuid):
    """The derived UUID that carries a port's client id."""
    return uuid + CLIENT_ID_SUFFIX


def is_derived(uuid):
    """True for a UUID made by :func:`client_id_port`."""
    return uuid.endswith(CLIENT_ID_SUFFIX)


def port_uuid(uuid):
    """The port's own UUID, for a port UUID or one :func:`client_id_port`
    made."""
    return uuid[:-len(CLIENT_ID_SUFFIX)] if is_derived(uuid) else uuid


def _claim_order(claim):
    return claim[0], claim[1] or ''


def snapshot_of(ports, nodes):
    """Return the :class:`policy.Snapshot` of one answer: ``ports`` (port
    UUID -> (key, node)) and ``nodes`` (node UUID -> NodeInfo).  Any key
    two ports hold is a conflict (see the module doc).
    """
    view = IronicView()
    view.apply(Listing(0, ports))
    view.apply(Inspection(0, nodes))
    return view.snapshot()


@dataclasses.dataclass
class Listing:
    """Every port, read page by page.

    :ivar seq: taken when the listing started.
    :ivar ports: the ports, in listing order.
    :ivar pages: ``[(items so far, seq)]``: after each page, how many
        items ``ports`` held, and the ``seq`` taken when that page was
        asked for.
    :ivar end: the ``seq`` of the last page (taken when it was asked for:
        its content is at least that fresh, and may be fresher).
    """

    seq: int
    ports: Ports
    pages: typing.List[typing.Tuple[int, int]] = None
    end: int = None

    def __post_init__(self):
        if self.pages is None:    # one page, read at once
            self.pages = [(len(self.ports), self.seq)]
        if self.end is None:
            self.end = self.pages[-1][1] if self.pages else self.seq


@dataclasses.dataclass
class Inspection:
    seq: int
    nodes: typing.Dict[str, policy.NodeInfo]


@dataclasses.dataclass
class NodePorts:
    seq: int
    node: str
    ports: Ports


@dataclasses.dataclass
class PortChanges:
    seq: int
    ports: Ports


@dataclasses.dataclass
class NodeGone:
    seq: int
    node: str


class IronicView:
    """Ports and inspected nodes, as the events have described them.

    :ivar macs: MAC -> node UUID (or None), for every known port; the
        mapping :func:`policy.decide` reads.
    :ivar nodes: node UUID -> :class:`policy.NodeInfo` for the nodes the
        last inspection answer listed.
    :ivar listed: a full listing has been adopted.
    :ivar answered: an inspection answer has been adopted.
    :ivar changes: count of effective changes (a cheap "did anything
        happen" for callers).
    """

    def __init__(self):
        self.ports = {}       # port UUID -> (mac, node)
        self.macs = {}        # mac -> node
        self.nodes = {}
        self.listed = False
        self.answered = False
        self.changes = 0
        #: MAC -> what happened to its port (for the decision log); the
        #: reader clears it.
        self.notes = {}
        self._owner = {}      # mac -> port UUID (the newest claim)
        # mac -> {port UUID: node} for the keys two or more ports claim
        self._claims = {}
        self._by_node = {}    # node -> set of port UUIDs
        self._listing_seq = -1
        self._answer_seq = -1
        # What events said since the last listing started, for the merge.
        self._touched = {}    # port UUID -> seq
        self._gone = {}       # node -> seq

    @property
    def complete(self):
        """True once both a listing and an inspection answer are in."""
        return self.listed and self.answered

    def snapshot(self):
        """Return a :class:`policy.Snapshot` sharing this view's mappings
        (valid until the next event is applied)."""
        return policy.Snapshot(ports=self.macs, nodes=self.nodes,
                               conflicts=self.conflicts())

    def conflicts(self):
        """Return ``{key: ((port UUID, node), ...)}`` for the keys two or
        more ports claim (port UUIDs as ironic names them, sorted)."""
        return {key: tuple(sorted(((port_uuid(uuid), node)
                                   for uuid, node in claim.items()),
                                  key=_claim_order))
                for key, claim in self._claims.items()}

    def port_of(self, mac):
        """Return ``(port UUID, node UUID or None)`` holding ``mac`` (a MAC
        or a client id), or None if no port has it."""
        uuid = self._owner.get(mac)
        if uuid is None:
            return None
        return port_uuid(uuid), self.ports[uuid][1]

    def ports_of(self, node):
        """Return ``{port UUID: (mac, node)}`` of ``node``."""
        return {uuid: self.ports[uuid] for uuid in self._by_node.get(node, ())}

    def apply(self, event):
        """Apply one event; return True if the view changed."""
        before = self.changes
        if isinstance(event, Listing):
            self.adopt_listing(event)
        elif isinstance(event, Inspection):
            self.inspection(event.seq, event.nodes)
        elif isinstance(event, NodePorts):
            self.node_ports(event.seq, event.node, event.ports)
        elif isinstance(event, PortChanges):
            self.port_changes(event.seq, event.ports)
        elif isinstance(event, NodeGone):
            self.node_gone(event.seq, event.node)
        else:
            raise TypeError('not a view event: %r' % (event,))
        return self.changes != before

    # -- operations -----------------------------------------------------

    def adopt_listing(self, listing):
        """Replace every port by a full listing.

        The listing's pages were read over time; for each port the fresher
        of two facts wins: the page that listed it, or the last event that
        touched it.  A port an event touched but the listing does not hold
        is dropped only if the event came before the last page was asked
        for: a port that still existed when that page was read would be in
        a page (the pages are read in id order and new ports have the
        highest ids), so it has been deleted.  Otherwise it is kept: it
        may have been created after the last page was read.
        """
        if listing.seq < self._listing_seq:
            return
        late = {u: s for u, s in self._touched.items() if s > listing.seq}
        gone = {n: s for n, s in self._gone.items() if s > listing.seq}
        late_macs = {self.ports[u][0]: s for u, s in late.items()
                     if u in self.ports}
        ports = {}
        page_of = {}
        lost_claims = set()
        boundaries = iter(listing.pages)
        limit, page_seq = next(boundaries, (0, listing.seq))
        for index, (uuid, (mac, node)) in enumerate(listing.ports.items()):
            while index >= limit:
                limit, page_seq = next(boundaries, (float('inf'),
                                                    listing.end))
            if late.get(uuid, -1) > page_seq:
                continue              # an event said more recently
            late.pop(uuid, None)      # the page said more recently
            if gone.get(node, -1) > page_seq:
                continue              # deleted with its node since
            if -1 < late_macs.get(mac, -1) < page_seq:
                # an event gave this MAC to another port, but this page
                # is fresher: that port has moved on since
                lost_claims.add(mac)
            ports[uuid] = (mac, node)
            page_of[uuid] = page_seq
        for uuid, s in late.items():
            if uuid not in self.ports:
                continue
            if uuid not in listing.ports and s <= listing.end:
                continue              # deleted before the last page
            if self.ports[uuid][0] in lost_claims:
                continue
            ports[uuid] = self.ports[uuid]
        # Events' ports come last: of two ports with one MAC, the later
        # one wins (see _rebuild), and an event fresher than the page of
        # the other port is the truth.
        self._rebuild(ports, page_of)
        self._listing_seq = listing.seq
        self.listed = True
        self.changes += 1
        for journal in (self._touched, self._gone):
            for key in [k for k, s in journal.items() if s <= listing.seq]:
                del journal[key]

    def inspection(self, seq, nodes):
        """Replace the nodes in an inspection state by a poll's answer."""
        if seq < self._answer_seq:
            return
        self._answer_seq = seq
        self.answered = True
        nodes = {uuid: info for uuid, info in nodes.items()
                 if self._gone.get(uuid, -1) < seq}
        if nodes != self.nodes:
            self.nodes = nodes
            self.changes += 1

    def node_ports(self, seq, node, ports):
        """Replace the ports of ``node`` by a fetch of them."""
        if seq < self._listing_seq or self._gone.get(node, -1) > seq:
            return
        for uuid in list(self._by_node.get(node, ())):
            if uuid not in ports:
                self.notes[self.ports[uuid][0]] = (
                    'its port was deleted from node %s' % node)
                self._remove(uuid, seq)
        for uuid, (mac, owner) in ports.items():
            if owner == node:
                self._upsert(uuid, mac, owner, seq, ports)

    def port_changes(self, seq, ports):
        """Apply ports as a change feed saw them (a port seen without a
        client id has none any more)."""
        if seq < self._listing_seq:
            return
        for uuid, (mac, node) in ports.items():
            if node is not None and self._gone.get(node, -1) > seq:
                continue
            self._upsert(uuid, mac, node, seq, ports)
            derived = client_id_port(uuid)
            if (not is_derived(uuid) and derived not in ports
                    and derived in self.ports):
                self.notes[self.ports[derived][0]] = (
                    'its port %s has no client id any more' % uuid)
                self._remove(derived, seq)

    def node_gone(self, seq, node):
        """Forget ``node`` and its ports: ironic said it does not exist."""
        self._gone[node] = max(seq, self._gone.get(node, -1))
        for uuid in list(self._by_node.get(node, ())):
            self.notes[self.ports[uuid][0]] = (
                'its node %s was deleted from ironic' % node)
            self._remove(uuid, seq)
        if self.nodes.pop(node, None) is not None:
            self.changes += 1

    # -- internals ------------------------------------------------------

    def _link(self, uuid, mac, node):
        """Give ``mac`` to ``uuid`` as its newest claim; a port already
        holding it keeps it too (a conflict): unlink it first to move the
        key instead."""
        other = self._owner.get(mac)
        if other is not None:
            claim = self._claims.setdefault(mac, {other: self.ports[other][1]})
            claim[uuid] = node
        self.ports[uuid] = (mac, node)
        self.macs[mac] = node
        self._owner[mac] = uuid
        self._by_node.setdefault(node, set()).add(uuid)

    def _unlink(self, uuid):
        mac, node = self.ports.pop(uuid)
        claim = self._claims.get(mac)
        if claim is not None:
            del claim[uuid]
            if self._owner[mac] == uuid:
                # the newest remaining claim
                self._owner[mac] = next(reversed(claim))
                self.macs[mac] = claim[self._owner[mac]]
            if len(claim) < 2:
                del self._claims[mac]
        elif self._owner.get(mac) == uuid:
            del self._owner[mac]
            del self.macs[mac]
        members = self._by_node.get(node)
        if members is not None:
            members.discard(uuid)
            if not members:
                del self._by_node[node]

    def _holders(self, mac):
        """Every port UUID that holds ``mac``."""
        claim = self._claims.get(mac)
        if claim is not None:
            return list(claim)
        return [self._owner[mac]] if mac in self._owner else []

    def _moves(self, mac, holder, answer):
        """Whether a new claim on ``mac`` takes it from ``holder``.

        :param answer: the ports of the answer the new claim comes in
            (a page, a node's ports, a feed's page), or None.
        """
        if macs_mod.is_client_id(mac):
            return False        # ironic does not keep client ids unique
        # ironic keeps MACs unique: another port that had it has let go of
        # it, unless the same answer says both have it.
        return answer is None or answer.get(holder, (None,))[0] != mac

    def _upsert(self, uuid, mac, node, seq, answer=None):
        if self.ports.get(uuid) == (mac, node):
            return
        if uuid in self.ports:
            old = self.ports[uuid][0]
            if old != mac:
                self.notes[old] = 'its port %s now has address %s' % (uuid,
                                                                      mac)
            self._unlink(uuid)
        for other in self._holders(mac):
            if self._moves(mac, other, answer):
                # The MAC moved to this port: the other one was deleted or
                # readdressed.
                self._unlink(other)
                self._touched[other] = seq
        self._link(uuid, mac, node)
        self._touched[uuid] = seq
        self.changes += 1

    def _remove(self, uuid, seq):
        if uuid in self.ports:
            self._unlink(uuid)
            self.changes += 1
        self._touched[uuid] = seq

    def _rebuild(self, ports, page_of):
        """Make ``ports`` the whole view.  Of two ports holding one MAC the
        later one wins (pages are read in creation order), unless one page
        holds both; every claim on a client id is kept.

        :param page_of: port UUID -> the page (its ``seq``) that listed it,
            for the ports a listing page said.
        """
        self.ports = {}
        self.macs = {}
        self._owner = {}
        self._claims = {}
        self._by_node = {}
        for uuid, (mac, node) in ports.items():
            page = page_of.get(uuid)
            for other in self._holders(mac):
                if page is None or page_of.get(other) != page:
                    if not macs_mod.is_client_id(mac):
                        self._unlink(other)
            self._link(uuid, mac, node)
