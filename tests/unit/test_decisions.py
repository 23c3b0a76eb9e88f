"""The decision log: one line per change, its reason, and the history."""

import logging

from pxefilterd import decisions
from pxefilterd import macs
from pxefilterd import policy
from pxefilterd.policy import Action

M1, M2 = '52:54:00:00:00:01', '52:54:00:00:00:02'
IB = 'id:ff:00:01'


def desired(unknown=Action.DENY, **keys):
    return policy.Desired(macs=dict(keys), unknown=unknown)


def reason(key):
    return policy.Reason(Action.ALLOW, 'test', 'because of %s' % key)


def test_only_changes_are_logged_with_their_reason_and_notes(caplog):
    caplog.set_level('INFO', logger='pxefilterd.decision')
    log = decisions.DecisionLog(clock=lambda: 1000.0)
    log.record(policy.Desired({M1: Action.DENY, IB: Action.DENY},
                              Action.DENY), reason)
    assert caplog.records == []           # the start-up state: not logged
    log.record(policy.Desired({M1: Action.ALLOW, IB: Action.ALLOW,
                               M2: Action.DENY}, Action.DENY), reason,
               notes={M1: 'its node entered inspect wait'})
    assert [r.getMessage() for r in caplog.records] == [
        'MAC %s: deny -> allow: its node entered inspect wait; because of '
        '%s [rule=test]' % (M1, M1),
        'Client %s: deny -> allow: because of %s [rule=test]' % (IB, IB)]
    # (M2: a new file saying what the wildcard said: no change)
    assert log.last_change(M1) == {
        'at': 1000.0, 'from': 'deny', 'to': 'allow', 'rule': 'test',
        'reason': 'its node entered inspect wait; because of %s' % M1}
    assert log.last_change(M2) is None
    assert log.last_change(M2, default_key=M1)['to'] == 'allow'


def test_a_large_step_is_summed_up(monkeypatch, caplog):
    monkeypatch.setattr(decisions, 'LOG_LIMIT', 2)
    caplog.set_level(logging.INFO, logger='pxefilterd.decision')
    keys = ['52:54:00:00:01:%02x' % i for i in range(5)]
    log = decisions.DecisionLog()
    log.record(policy.Desired(dict.fromkeys(keys, Action.DENY),
                              Action.DENY), reason)
    log.record(policy.Desired(dict.fromkeys(keys, Action.ALLOW),
                              Action.ALLOW), reason)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[-1] == ('... and 4 more decision change(s) in this step '
                         '(4 to allow)')
    assert decisions.label(macs.WILDCARD) == 'Unknown MACs'


def test_a_conflict_is_logged_once_and_its_end_too(caplog):
    caplog.set_level(logging.INFO, logger='pxefilterd.decision')
    claims = (('port-1', 'node-a'), ('port-2', 'node-b'))
    log = decisions.DecisionLog()

    def step(conflicts):
        log.record(policy.Desired({IB: Action.DENY}, Action.DENY,
                                  conflicts=conflicts), reason)
    step({})
    step({IB: claims})
    step({IB: claims})
    step({IB: claims + (('port-3', None),)})
    step(None)          # failed closed: not decided from ironic
    step({})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        'Client %s: %s [rule=conflict]'
        % (IB, policy.conflict_reason(claims).text),
        'Client %s: %s [rule=conflict]'
        % (IB, policy.conflict_reason(claims + (('port-3', None),)).text),
        'Client %s: no longer claimed by more than one port' % IB]
    assert 'claimed by 2 ports: port port-1 (node node-a)' in lines[0]
