import itertools

import pytest

from pxefilterd import macs
from pxefilterd import policy
from pxefilterd.policy import Action

A1, A2, B1, GONE = ('52:54:00:00:00:a1', '52:54:00:00:00:a2',
                    '52:54:00:00:00:b1', '52:54:00:00:00:ff')


WAIT = policy.NodeInfo('inspect wait', 'agent')


def snap(inspecting=(), info=WAIT):
    return policy.Snapshot(ports={A1: 'node-a', A2: 'node-a', B1: 'node-b',
                                  '52:54:00:00:00:c1': None},
                           nodes=dict.fromkeys(inspecting, info))


@pytest.mark.parametrize('inspecting,deny_unknown,auto,expected', [
    # every combination of (something inspected, deny_unknown, auto)
    ((), False, False, Action.DENY),
    ((), False, True, Action.ALLOW),
    ((), True, False, Action.DENY),
    (('node-a',), False, False, Action.ALLOW),
    (('node-a',), False, True, Action.ALLOW),
    (('node-a',), True, False, Action.DENY),
    # a node under inspection without ports still opens unknown MACs
    (('node-x',), False, False, Action.ALLOW),
    (('node-x',), True, False, Action.DENY),
])
def test_unknown_policy(inspecting, deny_unknown, auto, expected):
    options = policy.Options(deny_unknown_macs=deny_unknown,
                             auto_discovery=auto)
    desired = policy.decide(snap(inspecting), options, cached=[GONE])
    assert desired.unknown is expected
    # a MAC that left ironic gets exactly the unknown state
    assert desired.macs[GONE] is expected


@pytest.mark.parametrize('inspecting,deny_unknown,auto', list(
    itertools.product([(), ('node-a',), ('node-b',), ('node-a', 'node-b')],
                      [False, True], [False, True])))
def test_known_ports_follow_inspection_only(inspecting, deny_unknown, auto):
    options = policy.Options(deny_unknown_macs=deny_unknown,
                             auto_discovery=auto)
    desired = policy.decide(snap(inspecting), options)
    for mac, node in snap().ports.items():
        want = Action.ALLOW if node in inspecting else Action.DENY
        assert desired.macs[mac] is want, mac
    assert set(desired.macs) == set(snap().ports)


def test_port_without_node_is_denied_even_during_inspection():
    desired = policy.decide(snap(['node-a']), policy.Options())
    assert desired.macs['52:54:00:00:00:c1'] is Action.DENY


def test_cached_mac_still_known_is_not_overridden():
    desired = policy.decide(snap(['node-a']), policy.Options(), cached=[A1])
    assert desired.macs[A1] is Action.ALLOW


def test_fail_closed_denies_everything():
    desired = policy.fail_closed([A1, GONE])
    assert desired.unknown is Action.DENY
    assert desired.macs == {A1: Action.DENY, GONE: Action.DENY}


def test_entries_include_the_wildcard_first():
    desired = policy.decide(snap(), policy.Options())
    entries = list(desired.entries())
    assert entries[0] == (macs.WILDCARD, Action.DENY)
    assert len(entries) == 1 + len(desired.macs)


def test_counts():
    desired = policy.decide(snap(['node-a']), policy.Options())
    assert desired.counts() == (2, 2)


def test_diff_only_changes():
    desired = policy.decide(snap(['node-a']), policy.Options())
    current = dict(desired.entries())
    assert policy.diff(current, desired) == {}
    current[A1] = Action.DENY
    del current[B1]
    current[macs.WILDCARD] = None   # a file with invalid content
    assert policy.diff(current, desired) == {
        A1: Action.ALLOW, B1: Action.DENY, macs.WILDCARD: Action.ALLOW}


def test_diff_from_empty_writes_everything():
    desired = policy.decide(snap(), policy.Options())
    assert len(policy.diff({}, desired)) == 1 + len(desired.macs)


@pytest.mark.parametrize('state,interface,allowed', [
    ('inspect wait', 'agent', True),
    ('inspecting', 'agent', True),
    # ironic-inspector's interface: gone from ironic (ironic 39 has none),
    # so no longer in the default (ironic-pxe-filter's default too)
    ('inspecting', 'inspector', False),
    ('inspect wait', 'redfish', False),     # out-of-band: no PXE
    ('inspect wait', 'fake', False),
    ('inspect wait', None, False),
    ('manageable', 'agent', False),
    ('inspect failed', 'agent', False),
])
def test_only_in_band_inspection_states_and_interfaces_boot(
        state, interface, allowed):
    desired = policy.decide(snap(['node-a'], policy.NodeInfo(state,
                                                             interface)),
                            policy.Options())
    want = Action.ALLOW if allowed else Action.DENY
    assert desired.macs[A1] is want
    # a node that may not boot does not open the door to unknown MACs
    assert desired.unknown is want


def test_the_inspector_interface_boots_when_listed():
    """An ironic that still has ironic-inspector's interface: named in the
    option, its nodes boot as before the default changed."""
    options = policy.Options(supported_interfaces=frozenset({'agent',
                                                             'inspector'}))
    info = policy.NodeInfo('inspecting', 'inspector')
    assert policy.decide(snap(['node-a'], info), options).macs[A1] is \
        Action.ALLOW


def test_supported_interfaces_are_an_option():
    options = policy.Options(supported_interfaces=frozenset({'redfish'}))
    info = policy.NodeInfo('inspect wait', 'redfish')
    assert policy.decide(snap(['node-a'], info), options).macs[A1] is \
        Action.ALLOW
    assert policy.decide(snap(['node-a']), options).macs[A1] is Action.DENY


@pytest.mark.parametrize('inspecting,deny_unknown,auto', list(
    itertools.product([(), ('node-a',), ('node-b',)], [False, True],
                      [False, True])))
def test_explain_agrees_with_decide_for_every_mac(inspecting, deny_unknown,
                                                  auto):
    options = policy.Options(deny_unknown_macs=deny_unknown,
                             auto_discovery=auto and not deny_unknown)
    s = snap(inspecting)
    desired = policy.decide(s, options, cached=[GONE])
    for mac, action in desired.macs.items():
        reason = policy.explain(mac, s, options)
        assert reason.action is action, (mac, reason)
        assert reason.text
    assert policy.explain(GONE, s, options).action is desired.unknown


def test_explain_names_the_rule_and_the_option():
    s = snap(['node-a'], policy.NodeInfo('inspect wait', 'redfish'))
    reason = policy.explain(A1, s, policy.Options())
    assert reason.rule == 'unsupported-interface'
    assert reason.option == '[pxe_filter] supported_inspect_interfaces'
    assert 'redfish' in reason.text and reason.node == 'node-a'
    reason = policy.explain(GONE, snap(['node-a']), policy.Options())
    assert reason.rule == 'unknown-during-inspection'
    assert reason.option == '[pxe_filter] deny_unknown_macs'


# -- scope: one filter per site ---------------------------------------------

def site_snap():
    """node-a (shard s1, group g1) and node-b (shard s2, group g2), both in
    inspect wait."""
    return policy.Snapshot(
        ports={A1: 'node-a', A2: 'node-a', B1: 'node-b'},
        nodes={'node-a': policy.NodeInfo('inspect wait', 'agent', 's1', 'g1'),
               'node-b': policy.NodeInfo('inspect wait', 'agent', 's2',
                                         'g2')})


@pytest.mark.parametrize('shards,groups,allowed', [
    ((), (), {A1, A2, B1}),                 # no scope: every node
    (('s1',), (), {A1, A2}),
    (('s2',), (), {B1}),
    (('s1', 's2'), (), {A1, A2, B1}),
    ((), ('g2',), {B1}),
    (('s1',), ('g1',), {A1, A2}),
    (('s1',), ('g2',), set()),              # both must match
    (('s3',), (), set()),
])
def test_only_the_scopes_inspections_are_allowed(shards, groups, allowed):
    options = policy.Options(shards=frozenset(shards),
                             conductor_groups=frozenset(groups))
    desired = policy.decide(site_snap(), options)
    assert {m for m, a in desired.macs.items() if a is Action.ALLOW} == \
        allowed
    # the unknown policy follows this scope's inspections only
    assert desired.unknown is (Action.ALLOW if allowed else Action.DENY)
    for mac in (A1, A2, B1):
        reason = policy.explain(mac, site_snap(), options)
        assert reason.action is desired.macs[mac]
        if mac not in allowed:
            assert reason.rule == 'out-of-scope'
            assert reason.option == ('[pxe_filter] shard, '
                                     '[pxe_filter] conductor_group')


def test_out_of_scope_reason_names_the_nodes_shard_and_the_scope():
    options = policy.Options(shards=frozenset({'s2'}))
    reason = policy.explain(A1, site_snap(), options)
    assert "shard 's1'" in reason.text and 'shards s2' in reason.text
    assert 'conductor groups any' in reason.text
    assert policy.unknown_reason(frozenset(), options).text.endswith(
        "no node in this filter's scope is inspected: denied")


def test_a_key_two_ports_claim_is_denied_and_explained():
    claims = (('port-1', 'node-a'), ('port-2', 'node-b'))
    snapshot = policy.Snapshot(
        ports={A1: 'node-a', 'id:ff:00:01': 'node-b'},
        nodes=dict.fromkeys(['node-a', 'node-b'], WAIT),
        conflicts={A1: claims, 'id:ff:00:01': claims})
    desired = policy.decide(snapshot, policy.Options())
    assert desired.macs == {A1: Action.DENY, 'id:ff:00:01': Action.DENY}
    assert desired.conflicts == snapshot.conflicts
    why = policy.explain(A1, snapshot, policy.Options())
    assert (why.action, why.rule) == (Action.DENY, 'conflict')
    assert why.text.startswith('claimed by 2 ports: port port-1 (node '
                               'node-a), port port-2 (node node-b);')
