"""Sparse records against a real dnsmasq 2.90, judged by DHCP answers.

With ``deny_unknown_macs`` pxefilterd gives dnsmasq a record only for the
MACs that may boot; a MAC that may no longer boot keeps a deny record until
a compaction (a reload) lets it go.  First the dnsmasq facts this rests on
(no daemon), then the daemon with a real ironic: no per-port records, the
allowed -> denied transition, a compaction, DHCPv6 with the shipped
``tag:known`` setting, and explain.  (IPoIB ``id:`` records with
``deny_unknown_macs``: test_clients.py.)
"""

from __future__ import annotations

import threading
import time


from pxefilterd_harness import dhcp6_probe
from pxefilterd_harness.daemon import PxefilterdRunner
from pxefilterd_harness.dhcp6_probe import V6Client
from tests.integration.verdicts import UNKNOWN, eventually, mac

WILDCARD_FILE = 'unknown_hosts_filter'
FAST = {'timeout': 0.6, 'retries': 1}


def put(dm, hostsdir, name, content):
    """Write hostsdir file *name*; wait until dnsmasq has read it."""
    needle = 'read %s\n' % (hostsdir.path / name)
    before = dm.log_text().count(needle)
    hostsdir.write(name, content)
    assert dm.wait_for_log(needle, count=before + 1), dm.log_text()[-2000:]


def reload(dm, hostsdir):
    """SIGHUP dnsmasq; wait until it has read the wildcard file again."""
    needle = 'read %s\n' % (hostsdir.path / WILDCARD_FILE)
    before = dm.log_text().count(needle)
    dm.reload()
    assert dm.wait_for_log(needle, count=before + 1), dm.log_text()[-2000:]


def offers(probe, macs):
    result = probe(macs, **FAST)
    return {m: result[m].offer for m in macs}


def test_dnsmasq_keeps_a_deleted_allow_record_until_sighup(dnsmasq, hostsdir,
                                                           probe):
    """Why a MAC that was allowed needs a deny record: deleting its file
    changes nothing until a reload.  A deny record, then its file deleted,
    keeps it denied across the reload (the wildcard's)."""
    a = mac(1)
    put(dnsmasq, hostsdir, WILDCARD_FILE, '*:*:*:*:*:*,ignore\n')
    put(dnsmasq, hostsdir, a, a + '\n')
    assert offers(probe, [a]) == {a: True}
    (hostsdir.path / a).unlink()
    time.sleep(0.3)
    assert offers(probe, [a]) == {a: True}       # still allowed
    reload(dnsmasq, hostsdir)
    assert offers(probe, [a]) == {a: False}      # forgotten on SIGHUP
    put(dnsmasq, hostsdir, a, a + '\n')
    assert offers(probe, [a]) == {a: True}
    put(dnsmasq, hostsdir, a, a + ',ignore\n')   # the safe transition
    assert offers(probe, [a]) == {a: False}
    (hostsdir.path / a).unlink()                 # compaction: remove...
    assert offers(probe, [a]) == {a: False}
    reload(dnsmasq, hostsdir)                    # ... then reload
    assert offers(probe, [a]) == {a: False}


class Watch:
    """Probes MACs over and over in a thread; keeps ``(time, offered)``."""

    def __init__(self, probe, macs):
        self.probe, self.macs = probe, macs
        self.seen = {m: [] for m in macs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            result = self.probe(self.macs, timeout=0.3, retries=0)
            now = time.monotonic()
            for m in self.macs:
                self.seen[m].append((now, result[m].offer))

    def stop(self):
        self._stop.set()
        self._thread.join(30)

    def offered_after_silence(self, m, confirm=3):
        """Offers seen after ``confirm`` silences in a row (a denied MAC
        offered again), and the time of the first of those silences."""
        run, silent_at = 0, None
        late = []
        for t, offered in self.seen[m]:
            if silent_at is None:
                run = 0 if offered else run + 1
                if run == confirm:
                    silent_at = t
            elif offered:
                late.append(t)
        return late, silent_at


def test_sparse_records_transition_and_compaction(ironic, v6_dnsmasq,
                                                  dhcp_network, harness_tmp,
                                                  probe):
    nodes = []
    for i in range(3):
        node = ironic.create_node('rec-%d' % i)
        ironic.create_port(node, mac(i))
        nodes.append(node)
    a, b = mac(0), mac(1)
    v6 = [V6Client('a', a), V6Client('b', b, link_local='fe80::1234:b'),
          V6Client('unknown', UNKNOWN)]
    runner = PxefilterdRunner(
        harness_tmp / 'pxefilterd', ironic.url, v6_dnsmasq,
        options={'pxe_filter': {'deny_unknown_macs': 'True',
                                'sync_period': 3600},
                 'dnsmasq_pxe_filter': {'compaction_threshold': 1}}).start()
    hostsdir = v6_dnsmasq.hostsdir
    try:
        runner.wait_ready()
        # no record per port: the wildcard denies them all
        assert sorted(p.name for p in hostsdir.iterdir()) == [WILDCARD_FILE]
        eventually(probe, allowed=[], denied=[a, b, mac(2), UNKNOWN])
        ironic.inspect(nodes[0])
        eventually(probe, allowed=[a], denied=[b, mac(2), UNKNOWN])
        assert sorted(p.name for p in hostsdir.iterdir()) == [
            a, WILDCARD_FILE]
        answered = {n: r.advertise for n, r in dhcp6_probe.probe(
            dhcp_network, v6, **FAST).items()}
        assert answered == {'a': True, 'b': False, 'unknown': False}
        out = runner.ctl('explain', b)
        assert 'decision:  deny (rule not-inspected)' in out, out
        assert 'the wildcard rule, no record needed' in out, out
        assert 'answers a DHCP offer' in runner.ctl('explain', a)

        watch = Watch(probe, [a])
        time.sleep(1.0)
        aborted = time.monotonic()
        ironic.abort(nodes[0])
        # the deny record, then a compaction: a reload (the deny was
        # fresh), the file removed, a reload that drops it
        runner.wait_for_log('Compaction: dropping 1 record', timeout=20)
        deadline = time.monotonic() + 10
        while sorted(p.name for p in hostsdir.iterdir()) != [WILDCARD_FILE]:
            assert time.monotonic() < deadline, list(hostsdir.iterdir())
            time.sleep(0.1)
        time.sleep(2.0)                 # and well after the last reload
        watch.stop()
        late, silent_at = watch.offered_after_silence(a)
        assert silent_at is not None, watch.seen[a]
        assert late == [], (late, watch.seen[a])
        print('denied %.2f s after the abort; %d probes of it, none '
              'offered after that, through the compaction'
              % (silent_at - aborted, len(watch.seen[a])))
        assert offers(probe, [a, b]) == {a: False, b: False}
        answered = {n: r.advertise for n, r in dhcp6_probe.probe(
            dhcp_network, v6, **FAST).items()}
        assert answered == {'a': False, 'b': False, 'unknown': False}
        log = runner.log_text()
        assert 'reloading it first' in log
        assert 'dnsmasq reload (' not in log       # none failed
        assert runner.stop() == 0
    finally:
        runner.close()
