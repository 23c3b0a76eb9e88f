"""What an operator sees, against real services: ``pxefilterd-ctl explain``
from the running daemon and from ironic alone, judged with DHCP probes."""

from __future__ import annotations

import json

from tests.integration.verdicts import UNKNOWN, eventually


def explain(runner, mac):
    return json.loads(runner.ctl('explain', mac, '--format', 'json'))


def test_explain_allowed_denied_and_unknown(enroll, ironic, runner_factory,
                                            probe):
    (a, a_macs, a_ports), (b, b_macs, _) = enroll(2)
    runner = runner_factory(options={
        'pxe_filter': {'inspection_poll_interval': 1},
        # an operator's typo: reported, not silently ignored
        'dnsmasq_pxe_filter': {'purge_dhcp_hostsdr': 'false'}}).start()
    runner.wait_ready()
    assert ("[dnsmasq_pxe_filter] purge_dhcp_hostsdr is not a pxefilterd "
            "option and is ignored (did you mean purge_dhcp_hostsdir?)"
            in runner.log_text())
    ironic.inspect(a)
    eventually(probe, allowed=a_macs + [UNKNOWN], denied=b_macs)

    allowed = explain(runner, a_macs[0])
    assert allowed['source'].startswith('the running daemon')
    assert (allowed['action'], allowed['rule']) == ('allow', 'inspected')
    assert allowed['ironic']['port'] == a_ports[0]
    assert allowed['ironic']['provision_state'] == 'inspect wait'
    assert allowed['serves']['says'] == 'allow'     # what dnsmasq reads
    assert allowed['last_change']['to'] == 'allow'
    assert a in allowed['last_change']['reason']

    denied = explain(runner, b_macs[0])
    assert (denied['action'], denied['rule']) == ('deny', 'not-inspected')
    assert denied['file']['content'] == b_macs[0] + ',ignore'

    unknown = runner.ctl('explain', UNKNOWN)
    assert 'decision:  allow (rule unknown-during-inspection)' in unknown
    assert 'ironic:    no port has this address' in unknown
    assert 'unknown_hosts_filter' in unknown
    print(runner.ctl('explain', a_macs[0]))
    print(runner.ctl('explain', b_macs[0]))
    print(unknown)

    # The decision log says the same, once per change.
    log = runner.log_text()
    assert log.count('pxefilterd.decision [-] MAC %s: deny -> allow'
                     % a_macs[0]) == 1

    assert runner.stop() == 0
    # No daemon: explain asks ironic and reads the files.
    offline = explain(runner, a_macs[0])
    assert offline['source'].startswith('ironic, asked now')
    assert (offline['action'], offline['ironic']['node']) == ('allow', a)
    assert offline['last_change'] is None
