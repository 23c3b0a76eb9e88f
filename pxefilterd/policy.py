"""Who may PXE boot: the whole decision, as pure functions over plain values.

Rules (from the dnsmasq PXE filter specification):

* a node is *inspected* when ironic has it in an in-band inspection state
  (``inspecting`` or ``inspect wait``) with an inspect interface that boots
  a ramdisk over PXE (``Options.supported_interfaces``), and it is in this
  filter's scope: its shard and conductor group are among
  ``Options.shards`` / ``Options.conductor_groups`` when those are set (one
  filter per site; the nodes of other sites are denied like any node that
  is not inspected);
* a port of an inspected node -> allow;
* every other port ironic knows -> deny;
* a key (MAC or client id) that two or more ports claim -> deny, whatever
  their nodes: ironic does not keep ``extra['client-id']`` unique, and a
  node owner could copy the client id of another node's port; no claim can
  be told from a copy, so none is trusted;
* a MAC that ironic does not know follows the *unknown* policy: allowed while
  some node is inspected (so that a node whose ports are not enrolled yet can
  still boot the inspection ramdisk) or when auto-discovery is on, and always
  denied with ``deny_unknown_macs``;
* a MAC that has a file but is gone from ironic gets the unknown state: dnsmasq
  never forgets a record it has read, so deleting its file would keep the old
  answer; the file must say what an unknown MAC gets.

Which of those decisions need a record of their own (a hostsdir file) is a
second question, answered here too (:attr:`Desired.files`):

* with ``deny_unknown_macs`` the wildcard denies every MAC without a
  record, now and whatever happens later, so a port that is denied needs no
  record: only the allowed keys get one ("sparse" records), plus every key
  that already has one (dnsmasq may hold an allow record for it, which only
  a newer deny record or a reload overrides).  A record whose decision is
  the wildcard's is *stale*: a reload lets it go (:func:`stale`);
* otherwise the unknown policy can turn to allow at the next poll (an
  inspection starts), and every known MAC must already hold its deny: a
  record for every port, as ironic's own filters write.

Nothing here does I/O or reads global configuration.
"""

import dataclasses
import enum
import typing

from pxefilterd import macs

#: ironic provision states of in-band inspection.
INSPECTION_STATES = frozenset({'inspecting', 'inspect wait'})


class Action(enum.Enum):
    ALLOW = 'allow'
    DENY = 'deny'


@dataclasses.dataclass(frozen=True)
class NodeInfo:
    """What the decision needs to know of a node in an inspection state.

    ``shard`` and ``conductor_group`` are only asked of ironic when the
    filter is scoped (None otherwise; ironic's default group is '').
    """

    provision_state: str
    inspect_interface: typing.Optional[str] = None
    shard: typing.Optional[str] = None
    conductor_group: typing.Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What ironic said, validated.

    :ivar ports: normalised MAC -> node UUID (None for a port with no node).
    :ivar nodes: node UUID -> :class:`NodeInfo` for every node ironic has in
        an inspection state (whatever its inspect interface).
    :ivar conflicts: key -> ``((port UUID, node UUID or None), ...)``, for
        every key two or more ports claim (each also in ``ports``).
    """

    ports: typing.Mapping[str, typing.Optional[str]]
    nodes: typing.Mapping[str, NodeInfo] = dataclasses.field(
        default_factory=dict)
    conflicts: typing.Mapping[str, typing.Tuple[
        typing.Tuple[str, typing.Optional[str]], ...]] = dataclasses.field(
        default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Options:
    """The policy's settings.

    ``shards`` / ``conductor_groups``: empty means every node (no scope).
    ``sparse_records``: give dnsmasq only the records that change an
    answer when ``deny_unknown_macs`` makes that safe (see the module
    docstring); False writes a record for every port in every mode (the
    behaviour before sparse records, kept for comparisons: not a
    configuration option).
    """

    deny_unknown_macs: bool = False
    auto_discovery: bool = False
    supported_interfaces: typing.FrozenSet[str] = frozenset({'agent'})
    shards: typing.FrozenSet[str] = frozenset()
    conductor_groups: typing.FrozenSet[str] = frozenset()
    sparse_records: bool = True


def sparse(options):
    """Return whether only the records that change an answer are needed:
    the wildcard denies, and will deny whatever ironic says next."""
    return options.sparse_records and options.deny_unknown_macs


def in_scope(info, options):
    """Return whether a node belongs to this filter's shards and groups."""
    return ((not options.shards or info.shard in options.shards)
            and (not options.conductor_groups
                 or info.conductor_group in options.conductor_groups))


def inspected(info, options):
    """Return whether a node in ``info`` may boot the inspection ramdisk."""
    return (info.provision_state in INSPECTION_STATES
            and info.inspect_interface in options.supported_interfaces
            and in_scope(info, options))


def inspected_nodes(snapshot, options):
    """Return the UUIDs of the nodes whose ports are allowed."""
    return frozenset(uuid for uuid, info in snapshot.nodes.items()
                     if inspected(info, options))


@dataclasses.dataclass(frozen=True)
class Desired:
    """The state the hostsdir must express.

    :ivar macs: normalised MAC -> Action, for every MAC that needs a file.
    :ivar unknown: the Action for every MAC without a file (the wildcard).
    :ivar conflicts: the :attr:`Snapshot.conflicts` it was decided from
        (every one of those keys is denied), or None when it was not
        decided from ironic (:func:`fail_closed`).
    :ivar records: the keys that need a record of their own and what it
        must say (sparse records: see the module docstring), or None when
        every entry of ``macs`` needs one.
    """

    macs: typing.Mapping[str, Action]
    unknown: Action
    conflicts: typing.Optional[typing.Mapping[str, typing.Tuple[
        typing.Tuple[str, typing.Optional[str]], ...]]] = None
    records: typing.Optional[typing.Mapping[str, Action]] = None

    @property
    def files(self):
        """``{key: Action}`` of every per-key record the hostsdir must
        hold (the wildcard aside)."""
        return self.macs if self.records is None else self.records

    @property
    def sparse(self):
        """True when only the records that change an answer are kept."""
        return self.records is not None

    def entries(self):
        """Yield ``(key, action)`` for every file, the wildcard included."""
        yield macs.WILDCARD, self.unknown
        yield from self.macs.items()

    def counts(self):
        """Return ``(allowed, denied)`` counts over the per-MAC entries."""
        allowed = sum(1 for a in self.macs.values() if a is Action.ALLOW)
        return allowed, len(self.macs) - allowed


def unknown_action(inspected_uuids, options):
    """Return the Action for MACs ironic does not know."""
    if options.deny_unknown_macs:
        return Action.DENY
    if options.auto_discovery or inspected_uuids:
        return Action.ALLOW
    return Action.DENY


def decide(snapshot, options, cached=()):
    """Return the Desired state for ``snapshot``.

    :param cached: MACs that already have a file (dnsmasq may hold a
        record for each); those ironic no longer knows are given the
        unknown state (their files cannot simply be deleted).  With sparse
        records (:func:`sparse`) each keeps a record, saying its decision.
    """
    inspected_uuids = inspected_nodes(snapshot, options)
    unknown = unknown_action(inspected_uuids, options)
    # dict.fromkeys runs at C speed: at 100k MACs this is a few ms, which
    # keeps a sync that changes nothing far cheaper than a directory scan.
    result = dict.fromkeys(cached, unknown)
    result.update(dict.fromkeys(snapshot.ports, Action.DENY))
    allowed = []
    if inspected_uuids:
        for mac, node in snapshot.ports.items():
            if node is not None and node in inspected_uuids:
                allowed.append(mac)
        result.update(dict.fromkeys(allowed, Action.ALLOW))
    for key in snapshot.conflicts:
        result[key] = Action.DENY
    records = None
    if sparse(options):
        # (unknown is DENY: only what the wildcard would not say needs a
        # record, and whatever dnsmasq may already hold)
        records = {mac: Action.ALLOW for mac in allowed
                   if result[mac] is Action.ALLOW}
        records.update((key, result[key]) for key in cached)
    return Desired(macs=result, unknown=unknown,
                   conflicts=snapshot.conflicts, records=records)


def fail_closed(cached=()):
    """Return the state that lets nothing boot: every file and unknown deny."""
    return Desired(macs={mac: Action.DENY for mac in cached},
                   unknown=Action.DENY)


def diff(current, desired, entries=None):
    """Return ``{key: Action}`` for the entries whose file must be written,
    in the order they must be written: the wildcard first when it comes to
    deny, last when it comes to allow (the per-MAC denies it would
    otherwise override must be read by dnsmasq before it).

    :param current: ``{key: Action}`` of what is on disk, where key is a MAC
        or :data:`pxefilterd.macs.WILDCARD`; a key missing from ``current``
        has no file.
    :param desired: a :class:`Desired`.
    :param entries: the per-key entries to compare (default: the records,
        :attr:`Desired.files`; the decision log compares every decision).
    """
    entries = desired.files if entries is None else entries
    changes = {}
    wildcard = current.get(macs.WILDCARD) is not desired.unknown
    if wildcard and desired.unknown is Action.DENY:
        changes[macs.WILDCARD] = desired.unknown
    if not entries.items() <= current.items():   # checked at C speed
        changes.update((key, action) for key, action in entries.items()
                       if current.get(key) is not action)
    if wildcard and desired.unknown is Action.ALLOW:
        changes[macs.WILDCARD] = desired.unknown
    return changes


def stale(desired, cached, known):
    """Return the keys of ``cached`` whose records a reload of dnsmasq
    lets go (their files can then be removed).

    Every record, a record for every port: the MACs ironic no longer
    knows.  Sparse records: every record that says what the wildcard says.
    """
    if desired.records is None:
        return [key for key in cached if key not in known]
    unknown = desired.unknown
    return [key for key in cached
            if desired.macs.get(key, unknown) is unknown]


def kept(desired, known):
    """Return ``{key: Action}``: the records that must stay once dnsmasq
    is reloaded (what a base hosts file holds after a rebase)."""
    if desired.records is None:
        return {key: action for key, action in desired.macs.items()
                if key in known}
    return {key: action for key, action in desired.records.items()
            if action is not desired.unknown}


@dataclasses.dataclass(frozen=True)
class Reason:
    """Why a MAC gets its Action.

    :ivar action: the Action.
    :ivar rule: a short name: ``inspected``, ``not-inspected``,
        ``out-of-scope``, ``unsupported-interface``, ``no-node``,
        ``conflict``,
        ``unknown-deny-option``,
        ``unknown-auto-discovery``, ``unknown-during-inspection``,
        ``unknown-no-inspection``.
    :ivar text: one sentence for an operator.
    :ivar option: the ``[group] option`` that decided, if one did.
    :ivar node: the port's node, if the MAC is a port.
    """

    action: Action
    rule: str
    text: str
    option: typing.Optional[str] = None
    node: typing.Optional[str] = None


def explain(mac, snapshot, options):
    """Return the :class:`Reason` for ``mac`` (a normalised MAC) in
    ``snapshot``: the same Action :func:`decide` gives it."""
    if mac in snapshot.conflicts:
        return conflict_reason(snapshot.conflicts[mac])
    if mac in snapshot.ports:
        node = snapshot.ports[mac]
        if node is None:
            return Reason(Action.DENY, 'no-node',
                          'a port with no node: denied', node=None)
        info = snapshot.nodes.get(node)
        if info is None:
            return Reason(Action.DENY, 'not-inspected',
                          'port of node %s, which is not in an inspection '
                          'state: denied' % node, node=node)
        if (info.provision_state in INSPECTION_STATES
                and not in_scope(info, options)):
            return Reason(
                Action.DENY, 'out-of-scope',
                'port of node %s in %s, but the node is in shard %r and '
                'conductor group %r, outside this filter\'s scope (shards '
                '%s, conductor groups %s): denied' % (
                    node, info.provision_state, info.shard,
                    info.conductor_group, _names(options.shards),
                    _names(options.conductor_groups)),
                option='[pxe_filter] shard, [pxe_filter] conductor_group',
                node=node)
        if not inspected(info, options):
            return Reason(
                Action.DENY, 'unsupported-interface',
                'port of node %s in %s, but its inspect_interface %s does '
                'not boot over PXE: denied' % (node, info.provision_state,
                                               info.inspect_interface),
                option='[pxe_filter] supported_inspect_interfaces', node=node)
        return Reason(Action.ALLOW, 'inspected',
                      'port of node %s in %s (inspect_interface %s): allowed'
                      % (node, info.provision_state, info.inspect_interface),
                      node=node)
    return unknown_reason(inspected_nodes(snapshot, options), options)


def conflict_reason(claims):
    """Return the :class:`Reason` for a key claimed by every port of
    ``claims`` (``((port UUID, node UUID or None), ...)``)."""
    return Reason(
        Action.DENY, 'conflict',
        'claimed by %d ports: %s; ironic should have it on one port only, '
        'and no claim can be told from a copy (a client id can be copied '
        'by whoever may edit a port): denied until only one port has it'
        % (len(claims), ', '.join('port %s (node %s)' % claim
                                  for claim in claims)))


def _names(values):
    return ', '.join(sorted(values)) if values else 'any'


def unknown_reason(inspected_uuids, options):
    """Return the :class:`Reason` for a MAC ironic does not know."""
    action = unknown_action(inspected_uuids, options)
    if options.deny_unknown_macs:
        return Reason(action, 'unknown-deny-option',
                      'not a port in ironic, and unknown MACs are denied',
                      option='[pxe_filter] deny_unknown_macs')
    if options.auto_discovery:
        return Reason(action, 'unknown-auto-discovery',
                      'not a port in ironic; unknown MACs may always boot '
                      '(discovery)', option='[pxe_filter] auto_discovery')
    scoped = options.shards or options.conductor_groups
    if inspected_uuids:
        return Reason(action, 'unknown-during-inspection',
                      'not a port in ironic; unknown MACs may boot while a '
                      'node%s is inspected (%d now), so that a node whose '
                      'ports are not enrolled yet can boot; set '
                      'deny_unknown_macs to deny them'
                      % (' in this filter\'s scope' if scoped else '',
                         len(inspected_uuids)),
                      option='[pxe_filter] deny_unknown_macs')
    return Reason(action, 'unknown-no-inspection',
                  'not a port in ironic, and no node%s is inspected: denied'
                  % (' in this filter\'s scope' if scoped else ''))
