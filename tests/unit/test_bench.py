"""The pure parts of pxefilterd-bench on tiny inputs (no timing asserted):
the inspector-like baseline, the syscall counter, the report and its JSON,
statistics, the prober's decision logic, the derived defaults and the
command-line plan."""

import datetime
import json
import os
import time

import pytest

from pxefilterd import policy
from pxefilterd_bench import api
from pxefilterd_bench import baseline
from pxefilterd_bench import cli
from pxefilterd_bench import counters
from pxefilterd_bench import dnsmasq_bench
from pxefilterd_bench import env
from pxefilterd_bench import local
from pxefilterd_bench import prober
from pxefilterd_bench import report
from pxefilterd_bench import stats

M1, M2, M3 = '52:54:00:00:00:01', '52:54:00:00:00:02', '52:54:00:00:00:03'


def files(path):
    return {name: (path / name).read_text() for name in os.listdir(path)}


# -- baseline -----------------------------------------------------------------

def test_baseline_writes_what_changed_and_nothing_on_a_noop(tmp_path):
    drv = baseline.InspectorLikeHostsDir(str(tmp_path))
    assert drv.sync({M1, M2}, set(), allow_unknown=False) == 3
    assert files(tmp_path) == {
        M1: M1 + ',ignore\n', M2: M2 + ',ignore\n',
        'unknown_hosts_filter': '*:*:*:*:*:*,ignore\n20-:,ignore\n'}
    # no change: it still lists and stats everything, but writes nothing
    assert drv.sync({M1, M2}, set(), allow_unknown=False) == 0
    assert drv.last == {'listed': 3, 'stats': 3, 'written': 0}
    # one node under inspection, unknown allowed: 2 files
    assert drv.sync({M1, M2}, {M1}, allow_unknown=True) == 2
    assert files(tmp_path)[M1] == M1 + '\n'
    assert files(tmp_path)['unknown_hosts_filter'] == '*:*:*:*:*:*\n20-:\n'


def test_baseline_gives_removed_macs_the_unknown_state(tmp_path):
    drv = baseline.InspectorLikeHostsDir(str(tmp_path))
    drv.sync({M1, M2}, set(), allow_unknown=False)
    # M2 leaves ironic: its file stays, in the unknown state
    assert drv.sync({M1}, set(), allow_unknown=False) == 0
    assert drv.sync({M1}, set(), allow_unknown=True) == 2
    assert files(tmp_path)[M2] == M2 + '\n'


def test_baseline_rewrites_a_file_of_unexpected_size(tmp_path):
    drv = baseline.InspectorLikeHostsDir(str(tmp_path))
    drv.sync({M1}, set(), allow_unknown=False)
    (tmp_path / M1).write_text('garbage')
    assert drv.sync({M1}, set(), allow_unknown=False) == 1
    assert files(tmp_path)[M1] == M1 + ',ignore\n'


def test_ours_and_baseline_produce_the_same_files(tmp_path):
    ours_dir, base_dir = tmp_path / 'ours', tmp_path / 'base'
    ours_dir.mkdir()
    base_dir.mkdir()
    ours, base = local.Ours(ours_dir), local.Baseline(base_dir)
    ports = {M1: 'n1', M2: 'n1', M3: 'n2'}
    steps = [(frozenset(), policy.Options(deny_unknown_macs=True)),
             (frozenset({'n1'}), policy.Options(deny_unknown_macs=True)),
             (frozenset({'n1'}), policy.Options(auto_discovery=True)),
             (frozenset(), policy.Options())]
    for inspecting, options in steps:
        written = (ours.sync(ports, inspecting, options),
                   base.sync(ports, inspecting, options))
        assert written[0] == written[1]
        assert files(ours_dir) == files(base_dir)
    local._check_same(ours_dir, base_dir)


# -- counters -----------------------------------------------------------------

def test_counter_counts_file_calls_below_the_root_only(tmp_path):
    counter = counters.SyscallCounter.get()
    (tmp_path / 'a').write_text('x')
    with counter.counting(tmp_path) as c:
        os.stat(tmp_path / 'a')
        os.listdir(tmp_path)
        with open(tmp_path / 'b', 'w') as f:
            f.write('y')
        os.rename(tmp_path / 'b', tmp_path / 'c')
        os.stat('/')                      # outside: not counted
    assert c['stat'] == 1
    assert c['open'] == 1
    assert c['rename'] == 1
    assert c['listdir'] == 1
    assert c['per_file'] == 3
    assert c['listings'] == 1
    assert c['wall'] >= 0 and c['cpu'] >= 0
    # not counting any more
    os.stat(tmp_path / 'a')
    assert counter.counts['stat'] == 1


def test_our_noop_sync_makes_no_file_call(tmp_path):
    ours = local.Ours(tmp_path)
    ports = {M1: 'n1', M2: 'n2'}
    options = policy.Options()
    assert ours.sync(ports, frozenset(), options) == 3
    with counters.SyscallCounter.get().counting(tmp_path) as c:
        assert ours.sync(ports, frozenset(), options) == 0
    assert c['per_file'] == 0 and c['listings'] == 0


# -- report -------------------------------------------------------------------

def test_row_ratio_and_target():
    row = report.Row('s', 'c', 'time', 1.0, 's', baseline=4.0,
                     target=('<=', 2.0))
    assert row.ratio == 0.25
    assert row.met is True
    assert report.Row('s', 'c', 'm', 3.0, target=('<=', 2.0)).met is False
    assert report.Row('s', 'c', 'm', None, target=('<=', 2.0)).met is None
    assert report.Row('s', 'c', 'm', 1, baseline=0).ratio is None
    with pytest.raises(ValueError):
        report.Row('s', 'c', 'm', 1, target=('~', 1))


def test_table_shows_figures_errors_and_skips():
    r = report.Report()
    r.add('1 local', '1k ports: no-op sync', 'time', 0.0025, 's',
          baseline=0.04, note='median of 3')
    r.add('1 local', '1k ports: no-op sync', 'files written', 0, baseline=0,
          target=('==', 0))
    r.error('2 api', '1k ports', 'IronicError: boom')
    r.skip('4 dnsmasq', 'all', 'needs root')
    text = r.table()
    assert '== 1 local ==' in text and '== 2 api ==' in text
    assert '2.5 ms' in text and '40 ms' in text and '0.06' in text
    assert 'yes' in text
    assert 'IronicError: boom' in text and 'needs root' in text
    assert r.crashed == ['2 api / 1k ports']     # a skip is no crash


def test_json_has_every_figure(tmp_path):
    r = report.Report({'quick': True})
    r.add('s', 'c', 'm', 2.0, 's', baseline=1.0, target=('<=', 1.0))
    r.detail('raw', {'values': [1, 2], 'set': {3}})
    path = tmp_path / 'out.json'
    r.write_json(str(path))
    data = json.loads(path.read_text())
    assert data['meta'] == {'quick': True}
    row, = data['rows']
    assert row['value'] == 2.0 and row['ratio'] == 2.0
    assert row['met'] is False and row['target'] == ['<=', 1.0]
    assert data['details']['raw'] == {'values': [1, 2], 'set': [3]}
    assert data['crashed'] == []
    assert not (tmp_path / 'out.json.tmp').exists()


@pytest.mark.parametrize('value,unit,text', [
    (0.0123, 's', '12.3 ms'), (2.5, 's', '2.5 s'), (12345, '', '12,345'),
    (None, 's', '-'), (True, '', 'yes'), (55.66, 'MB', '55.7 MB'),
    (0, 's', '0 s')])
def test_format_value(value, unit, text):
    assert report.format_value(value, unit) == text


# -- statistics and helpers ---------------------------------------------------

def test_percentiles():
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert stats.percentile([5], 95) == 5
    assert stats.percentile(range(1, 101), 95) == pytest.approx(95.05)
    s = stats.summary([3, 1, 2])
    assert (s['n'], s['min'], s['p50'], s['max']) == (3, 1, 2, 3)
    assert stats.summary([])['p95'] is None
    with pytest.raises(ValueError):
        stats.percentile([], 50)


def test_make_macs_are_distinct_and_valid():
    macs = env.make_macs(300, prefix='52:54:10')
    assert len(set(macs)) == 300
    assert macs[0] == '52:54:10:00:00:00' and macs[256] == '52:54:10:00:01:00'
    assert env.fmt_size(100000) == '100k' and env.fmt_size(1500) == '1500'


def test_log_counter_counts_whole_lines_only(tmp_path):
    log = tmp_path / 'log'
    log.write_bytes(b'read /x/a\nread /x/b\nread /x')
    counter = env.LogCounter(log, b'read /x/')
    assert counter.poll() == 2
    with open(log, 'ab') as f:
        f.write(b'/c\nother\n')
    assert counter.poll() == 3


# -- prober logic -------------------------------------------------------------

def test_tracker_offer_takes_the_first_answer():
    t = prober.Tracker('offer')
    assert t.result(0.0) is None
    a, b = t.sent(1.0), t.sent(1.02)
    t.answered(b, 1.05)
    t.answered(a, 1.06)     # a late answer to the earlier DISCOVER
    res = t.result(1.1)
    assert res['t_recv'] == 1.05 and res['t_send'] == 1.02


def test_tracker_silence_needs_consecutive_unanswered_discovers():
    t = prober.Tracker('silence', timeout=0.1, confirm=3)
    for i in range(6):
        t.sent(i * 0.02)
    t.answered(0, 0.01)
    t.answered(1, 0.03)
    t.answered(3, 0.07)     # answered again after one silence
    assert t.result(0.2) is None       # only 4 and 5 silent
    t.sent(0.12)
    assert t.result(0.2) is None       # 6 not matured yet
    res = t.result(0.25)
    assert res['t_silent'] == pytest.approx(0.08) and res['index'] == 4


def test_tracker_late_answer_counts_as_silence():
    t = prober.Tracker('silence', timeout=0.1, confirm=2)
    t.sent(0.0)
    t.sent(0.02)
    t.answered(0, 0.5)
    assert t.result(0.6)['index'] == 0


# -- API cost and burst defaults ----------------------------------------------

def test_api_cost_per_minute():
    cost = api.api_cost(listing=1.0, poll=0.01, pages=10)
    # 4 syncs: 4 listings + 8 node requests; 60 polls: 120 node requests
    assert cost['ours']['node_requests'] == 128
    assert cost['ours']['seconds'] == pytest.approx(4 + 1.28)
    assert cost['ours']['requests'] == 40 + 128
    assert cost['poller']['seconds'] == pytest.approx(8.0)
    assert cost['poller']['requests'] == 80
    assert api.overhead_pct(1.3, 1.0) == pytest.approx(30.0)


def burst(k, lost, n=10000, pace='full speed', leases=0, cpe=0.0001):
    return {'n': n, 'k': k, 'lost': lost, 'pace': pace, 'leases': leases,
            'layout': 'files', 'cpu_per_event': cpe}


def test_recommend_from_bursts():
    results = [burst(5000, 0), burst(10000, 0), burst(20000, 300),
               burst(40000, 9000), burst(100, 0, pace='cost', leases=150,
                                         cpe=0.04)]
    rec = dnsmasq_bench.recommend(results, queue=16384)
    assert rec['largest_safe_k'] == 10000
    assert rec['smallest_lossy_k'] == 20000
    assert rec['max_burst'] == 8192
    assert rec['slowest_capacity'] == pytest.approx(10000)
    assert rec['burst_rate'] == 5000
    assert rec['burst_rate_with_leases'] == {'N=10000 L=150': 12}
    safety = dnsmasq_bench.defaults_safety(
        results[:4], results[4:], max_burst=8000, burst_rate=2000)
    ok = {(c['leases']): c['burst_rate_ok'] for c in safety['conditions']}
    assert ok == {0: True, 150: False}


def test_recommend_without_data():
    rec = dnsmasq_bench.recommend([])
    assert rec['max_burst'] is None and rec['burst_rate'] is None


def test_cost_k_stays_within_bounds():
    assert dnsmasq_bench.cost_k(10000, 0) == 2000
    assert 20 <= dnsmasq_bench.cost_k(100000, 150) <= 500
    assert dnsmasq_bench.cost_k(1000, 1) == 500


# -- command line -------------------------------------------------------------

def test_plan_quick_and_full():
    parser = cli.build_parser()
    quick = cli.make_plan(parser.parse_args(['--quick']))
    assert quick['sizes'] == [1000, 10000]
    assert quick['latency_cases'] == [(1000, 10)]
    assert quick['burst_n'] == [10000]
    assert quick['bigflip_sizes'] == []
    full = cli.make_plan(parser.parse_args([]))
    assert full['sizes'] == [1000, 10000, 100000]
    assert full['latency_cases'] == [(10000, 20), (100000, 20)]
    assert full['burst_n'] == [10000, 50000]
    assert full['bigflip_sizes'] == [100000]
    assert full['events_cases'] == [(10000, 20), (100000, 20)]
    assert full['events_batches'] == (20, 1200)
    assert full['load_sizes'] == [10000, 100000]
    assert quick['events_cases'] == [(1000, 3)]
    only = cli.make_plan(parser.parse_args(['--only', 'local,api',
                                            '--skip', 'api',
                                            '--sizes', '500']))
    assert only['families'] == ['local'] and only['sizes'] == [500]


def test_plan_rejects_unknown_family():
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(['--only', 'nope'])


def test_find_lost_ignores_silences_in_rounds_with_drops():
    calls = []

    def probe_round(macs, rate):
        calls.append((list(macs), rate))
        if len(calls) == 1:          # overloaded: drops, M2 and M3 silent
            return [M2, M3], 5
        return [M3], 0               # M2 answers once probed slowly

    lost, st = dnsmasq_bench.find_lost([M1, M2, M3], probe_round, 1000.0)
    assert lost == [M3]
    assert [rate for _, rate in calls] == [1000.0, 500.0, 500.0]
    assert calls[1][0] == [M2, M3] and calls[2][0] == [M3]
    assert st['undecided'] == 0 and st['clean_rate'] == 500.0
    assert st['rcvbuf_errors'] == 5


def test_find_lost_gives_up_after_max_rounds():
    lost, st = dnsmasq_bench.find_lost(
        [M1], lambda macs, rate: (list(macs), 1), 1000.0, max_rounds=3)
    assert lost == [] and st['undecided'] == 1
    assert [r['rate'] for r in st['rounds']] == [1000.0, 500.0, 250.0]
    assert dnsmasq_bench.probe_rate(10000) == 2500.0
    assert dnsmasq_bench.probe_rate(100000) == 400.0


def test_spread_keeps_first_and_last():
    items = list(range(100))
    assert dnsmasq_bench.spread(items, 5) == [0, 25, 50, 74, 99]
    assert dnsmasq_bench.spread(items, 200) == items
    assert dnsmasq_bench.spread(items, 1) == [99]


def test_daemon_write_times_from_the_log():
    from pxefilterd_bench import latency
    log = ('2026-11-23 10:00:00.100 12 INFO pxefilterd.service [-] Ready: x\n'
           '2026-11-23 10:00:01.250 12 INFO pxefilterd.service [-] Wrote 3 '
           'file(s): 2 allowed\n'
           '2026-11-23 10:00:05.000 12 INFO pxefilterd.service [-] Wrote 1 '
           'file(s): 0 allowed\n')
    times = latency.write_times(log)
    assert len(times) == 2 and times[1] - times[0] == pytest.approx(3.75)
    results = [{'wall_inspect': times[0] - 0.5, 'wall_wait': times[0] - 0.2,
                'wall_abort': times[0] + 1.0, 'wall_failed': times[0] + 1.1}]
    latency.add_daemon_times(results, times)
    assert results[0]['daemon_allow'] == pytest.approx(0.2)
    assert results[0]['daemon_deny'] == pytest.approx(3.75 - 1.1)


def test_decision_times_from_the_decision_log():
    from pxefilterd_bench import events
    log = (
        '2026-12-02 10:00:00.100 1 INFO pxefilterd.decision [-] MAC '
        '52:54:00:00:00:01: deny -> allow: port of node x in inspect wait '
        '(inspect_interface agent): allowed [rule=inspected]\n'
        '2026-12-02 10:00:00.200 1 INFO pxefilterd.decision [-] MAC '
        '52:54:00:00:00:01: deny -> allow: again\n'
        '2026-12-02 10:00:00.300 1 INFO pxefilterd.decision [-] MAC '
        '52:54:00:00:00:02: allow -> deny: left\n'
        '2026-12-02 10:00:00.400 1 INFO pxefilterd.service [-] Wrote 1\n')
    times = events.decision_times(log)
    assert list(times) == ['52:54:00:00:00:01']
    assert times['52:54:00:00:00:01'] == datetime.datetime(
        2026, 12, 2, 10, 0, 0, 100000).timestamp()
    assert events.decision_times(log, since=time.time() + 10 ** 9) == {}


def test_window_cost_per_minute_by_kind():
    from pxefilterd_bench import events
    from pxefilterd_harness.proxy import Record
    records = [Record('GET /v1/nodes?provision_state=inspect+wait HTTP/1.1',
                      0, 0.01, 200)] * 30 + [
        Record('GET /v1/ports?sort_key=id&sort_dir=desc HTTP/1.1', 0, 0.02,
               200),
        Record('GET /v1/ports?fields=uuid HTTP/1.1', 0, 0.2, 200)]
    seconds, requests, kinds = events.window_cost(records, 30.0)
    assert seconds == pytest.approx((0.3 + 0.02 + 0.2) * 2)
    assert requests == 64
    assert kinds['nodes inspect wait']['requests_per_min'] == 60
    assert kinds['ports feed (id)']['median_ms'] == pytest.approx(20)
    assert kinds['full listing page']['seconds_per_min'] == \
        pytest.approx(0.4)


# -- family 12: sparse records ----------------------------------------------

def test_records_plan():
    parser = cli.build_parser()
    assert cli.make_plan(parser.parse_args(['--quick']))[
        'records_sizes'] == [0, 1000]
    assert cli.make_plan(parser.parse_args([]))['records_sizes'] == [
        0, 10000, 100000]
    assert cli.make_plan(parser.parse_args(
        ['--only', 'records', '--sizes', '5000']))['records_sizes'] == [
        0, 5000]


def test_records_fixture_gives_each_strategy_its_records(tmp_path):
    from pxefilterd import hostsdir
    from pxefilterd_bench import records
    snapshot, allowed, storm = records.fixture(3000)
    assert len(snapshot.ports) == 3020 and len(allowed) == 20
    assert len(storm) == 1200 and not set(storm) & set(allowed)
    assert set(storm) <= set(snapshot.ports)
    for sparse, files in ((False, 3021), (True, 21)):
        path = tmp_path / str(sparse)
        path.mkdir()
        store = hostsdir.HostsDir(str(path))
        store.check()
        written, _ = records.write(store, snapshot, sparse)
        assert written == files == len(os.listdir(path))
        assert all(store.index[m] is policy.Action.ALLOW for m in allowed)
    _, _, unknown = records.fixture(0)
    assert len(unknown) == 1200


def test_records_schedules_and_figures():
    from pxefilterd_bench import records
    rr = records.round_robin(['a', 'b'], 4.0, 1.0)
    assert rr == [[0.0, 'a'], [0.25, 'b'], [0.5, 'a'], [0.75, 'b']]
    sends = records.storm_schedule(['d1', 'd2', 'd3'], ['a1'], rate=10.0)
    assert len(sends) == 4 * len(records.RETRIES)
    assert sends == sorted(sends)
    firsts = {}
    for t, mac in sends:
        firsts.setdefault(mac, t)
    assert sorted(firsts.values()) == [0.0, 0.1, 0.2, 0.3]
    result = {'sends': [[0.0, 'a1', None], [0.5, 'd1', None],
                        [1.0, 'a1', 0.25], [1.5, 'a2', 0.1]]}
    assert records.first_offers(result, ['a1', 'a2', 'a3']) == {
        'a1': 1.25, 'a2': 1.6, 'a3': None}
    assert records.waits(result, ['a1', 'a2', 'a3']) == {
        'a1': 1.25, 'a2': pytest.approx(0.1), 'a3': None}
    assert records.answered_rate(result) == pytest.approx(2 / 1.6)
    assert records.answered_rate({'sends': [[0.0, 'x', None]]}) == 0.0
