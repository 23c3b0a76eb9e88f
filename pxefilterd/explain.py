"""``pxefilterd-ctl explain``: why a MAC may or may not PXE boot.

An explanation is a plain dict (printed as text or JSON), built by
:func:`answer` alone.  It comes from the running daemon when one answers on
the control socket (:meth:`pxefilterd.service.Service.explain`: its view of
ironic, its decision log); otherwise it is worked out now, from ironic and
the same pure policy (:func:`from_ironic`).  Either way :func:`add_disk`
adds what is on disk, which is what dnsmasq reads, and what dnsmasq should
answer.
"""

import datetime
import os

from pxefilterd import hostsdir
from pxefilterd import macs
from pxefilterd import policy
from pxefilterd import view


def from_ironic(client, key, options):
    """Explain ``key`` from ironic, asked now (no daemon).

    Two kinds of request: the nodes in an inspection state (for the
    unknown policy and the port's node), and the port with that address
    (for a client id: every port).

    :raises pxefilterd.ironic.ApiError: ironic cannot be asked.
    """
    nodes = client.inspection_nodes()
    ports = {}
    port = None
    if key != macs.WILDCARD:
        # ironic filters ports by address; a client id is only found in a
        # full listing (every page).
        query = None if macs.is_client_id(key) else {'address': key}
        for uuid, found, node, _ in client.ports(query):
            if found == key:
                ports[uuid] = (found, node)
                port = (view.port_uuid(uuid), node)
    snapshot = view.snapshot_of(ports, nodes)
    inspected = policy.inspected_nodes(snapshot, options)
    if key == macs.WILDCARD:
        reason = policy.unknown_reason(inspected, options)
    else:
        reason = policy.explain(key, snapshot, options)
    return answer(key, reason,
                  ironic_facts(port, nodes, len(inspected), options),
                  records=records_mode(options))


def records_mode(options):
    """How the hostsdir gives records under ``options``: ``sparse`` (only
    the keys that may boot, and those dnsmasq may still hold) or ``every
    port``."""
    return 'sparse' if policy.sparse(options) else 'every port'


def answer(key, reason, facts, last_change=None, **more):
    """The explanation of ``key``: the one shape the daemon and
    ``pxefilterd-ctl`` both give.

    :param reason: the :class:`policy.Reason` of the decision, or None
        when neither the daemon nor ironic could be asked.
    :param facts: the ironic facts behind it (:func:`ironic_facts`).
    :param last_change: the last change of the decision (a dict from
        :class:`pxefilterd.decisions.Decisions`), or None.
    :param more: further items, e.g. what the daemon wrote.
    """
    if reason is None:
        decision = {'action': 'unknown', 'rule': 'unknown', 'option': None,
                    'text': 'neither the daemon nor ironic could be asked'}
    else:
        decision = {'action': reason.action.value, 'rule': reason.rule,
                    'text': reason.text, 'option': reason.option}
    return dict(decision, key=key, ironic=facts, last_change=last_change,
                **more)


def ironic_facts(port, nodes, inspected, options):
    """The ironic facts behind a decision, as plain values.

    :param port: ``(port UUID, node UUID or None)`` holding the MAC, or None.
    :param nodes: node UUID -> :class:`policy.NodeInfo` of the nodes in an
        inspection state.
    :param inspected: how many nodes are inspected (in scope) now.
    """
    facts = {'inspected_nodes': inspected}
    if options.shards or options.conductor_groups:
        facts['scope'] = {'shard': sorted(options.shards),
                          'conductor_group': sorted(options.conductor_groups)}
    if port is not None:
        facts['port'], facts['node'] = port
        info = nodes.get(port[1])
        facts['provision_state'] = info.provision_state if info else None
        facts['inspect_interface'] = info.inspect_interface if info else None
        if info is not None and 'scope' in facts:
            facts['shard'] = info.shard
            facts['conductor_group'] = info.conductor_group
    return facts


def _read(path):
    """The file's bytes, None if there is none, or the OSError (a symlink
    is never followed: ELOOP)."""
    try:
        return hostsdir.read_file(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc


def add_disk(result, store, key):
    """Add what dnsmasq reads for ``key`` to ``result``; return it.

    ``key`` is the normalised MAC (client id, or the wildcard) the caller
    asked about, never one taken from an answer: the files read are the
    ones named after it in ``store`` (no symlink followed).  ``file``: the
    MAC's own file (path, content, what it says); ``serves``: the record
    that decides (the MAC's file, else its base hosts file line, else
    ``unknown_hosts_filter``) and what dnsmasq answers with it; ``rule``
    says why a denied key needs no record of its own when the wildcard
    decides (with sparse records, a port that may not boot has none).

    :raises ValueError: ``key`` is not a valid key.
    """
    if not hostsdir.valid_key(key):
        raise ValueError('not a MAC address or client id: %r' % (key,))
    result['key'] = key
    path = os.path.join(store.path, hostsdir.file_name(key))
    data = _read(path)
    disk = {'path': path, 'exists': data is not None}
    if isinstance(data, OSError):
        disk.update(exists=True, error=data.strerror or str(data))
        data = None
    if data is not None:
        disk['content'] = data.decode('ascii', 'replace').strip()
        action = hostsdir.parse(key, data)
        disk['says'] = action.value if action else 'invalid'
    result['file'] = disk
    says = disk.get('says')
    record = path
    if says is None and key != macs.WILDCARD:
        if store.base_path:
            try:
                base, _ = hostsdir.read_base(store.base_path)
            except OSError:
                base = {}      # (status says why)
            if key in base:
                says, record = base[key].value, store.base_path
        if says is None:
            record = os.path.join(store.path,
                                  hostsdir.file_name(macs.WILDCARD))
            action = hostsdir.parse(macs.WILDCARD, _bytes(_read(record)))
            says = action.value if action else None
    rule = None
    if record.endswith(hostsdir.WILDCARD_FILE) and key != macs.WILDCARD:
        port = (result.get('ironic') or {}).get('port')
        denied = says == 'deny' and result.get('action') == 'deny'
        if port and not (denied and result.get('records') == 'sparse'):
            # a port that needs its own record (it may boot, or a record
            # per port): missing, a write pending or failing
            rule = 'the wildcard rule, for now: its own record is missing'
        elif denied:
            rule = 'the wildcard rule, no record needed: %s' % (
                'a port that may not boot is ignored like any unknown MAC '
                '(deny_unknown_macs)' if port else 'unknown MACs are ignored')
    answers = ('a DHCP offer: it may PXE boot' if says == 'allow'
               else 'nothing: its DHCP requests are ignored'
               if says == 'deny' else
               'unknown: no valid record (dnsmasq offers to '
               'MACs it has no record for)')
    doubt = foreign_doubt(store, result)
    if doubt:
        answers = 'not known for sure: %s' % doubt
    result['serves'] = {
        'record': record,
        'says': says,
        'dnsmasq_answers': answers,
        'agrees': says == result.get('action'),
        'foreign': doubt,
        'rule': rule,
    }
    return result


def foreign_doubt(store, result):
    """Why dnsmasq may answer from a record pxefilterd did not write, or
    None: a foreign entry in the hostsdir now, or one that the running
    daemon says dnsmasq has not been made to forget yet (dnsmasq reads
    forms of addresses no scan can be sure to recognise, and keeps what it
    read until a reload)."""
    try:
        foreign = sorted(name for name in os.listdir(store.path)
                         if hostsdir.key_for_name(name) is None)
    except OSError:
        foreign = []
    if foreign:
        return ('foreign entries in the hostsdir (%s) may hold a record '
                'for it' % ', '.join(repr(n[:40]) for n in foreign[:3]))
    if (result.get('dnsmasq') or {}).get('foreign_records'):
        return ('dnsmasq may still hold a record read from a foreign entry '
                '(the reload that makes it forget has not succeeded yet: '
                'see the daemon log)')
    return None


def _bytes(data):
    return data if isinstance(data, bytes) else b''


def when(stamp):
    """A Unix time as local 'YYYY-MM-DD HH:MM:SS', or 'never'."""
    if not stamp:
        return 'never'
    return datetime.datetime.fromtimestamp(stamp).isoformat(
        sep=' ', timespec='seconds')


def render(result, out):
    """Write ``result`` for a person to read."""
    key = result['key']
    out.write('%s\n' % ('Unknown MACs and client ids (%s)' % key
                        if key == macs.WILDCARD else 'Client %s' % key
                        if macs.is_client_id(key) else 'MAC %s' % key))
    out.write('  decision:  %s (rule %s)\n' % (result['action'],
                                              result['rule']))
    out.write('  why:       %s\n' % result['text'])
    if result.get('option'):
        out.write('  option:    %s\n' % result['option'])
    facts = result.get('ironic') or {}
    if 'port' in facts:
        node = facts['node']
        state = facts.get('provision_state')
        out.write('  ironic:    port %s of node %s%s\n' % (
            facts['port'], node or '(none)',
            '' if node is None else
            '; node in %s, inspect_interface %s' % (
                state, facts.get('inspect_interface')) if state
            else '; node not in an inspection state'))
    elif key != macs.WILDCARD:
        out.write('  ironic:    no port has this address\n')
    scope = facts.get('scope')
    if 'shard' in facts:
        out.write('  site:      node in shard %r, conductor group %r\n'
                  % (facts['shard'], facts['conductor_group']))
    out.write('  inspected: %d node(s) now%s\n' % (
        facts.get('inspected_nodes', 0),
        ' in this filter\'s scope (shards %s, conductor groups %s)' % (
            ', '.join(scope['shard']) or 'any',
            ', '.join(scope['conductor_group']) or 'any') if scope else ''))
    disk = result.get('file')
    if disk is not None:
        if disk['exists']:
            out.write('  file:      %s: %s\n' % (
                disk['path'], disk.get('error') or '"%s" (%s)' % (
                    disk.get('content'), disk.get('says'))))
        else:
            out.write('  file:      %s: none\n' % disk['path'])
    serves = result.get('serves')
    if serves is not None:
        out.write('  dnsmasq:   answers %s (from %s%s)\n'
                  % (serves['dnsmasq_answers'], serves['record'],
                     ': %s' % serves['rule'] if serves.get('rule') else ''))
        if serves.get('foreign'):
            out.write('  WARNING:   %s\n' % serves['foreign'])
        if not serves['agrees']:
            out.write('  NOTE:      the record on disk does not say what was '
                      'decided yet (a write pending, paced, or failing: see '
                      'the daemon log)\n')
    last = result.get('last_change')
    if last:
        out.write('  changed:   %s: %s -> %s: %s\n' % (
            when(last['at']), last['from'], last['to'], last['reason']))
    elif result.get('last_change_note'):
        out.write('  changed:   %s\n' % result['last_change_note'])
    if result.get('failed_closed'):
        out.write('  FAILED CLOSED: ironic has not answered for '
                  'max_stale_seconds; every MAC is denied\n')
    source = result.get('source')
    if source:
        out.write('  source:    %s\n' % source)
