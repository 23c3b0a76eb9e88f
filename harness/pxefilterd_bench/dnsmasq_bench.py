"""Scenarios 4 and 6: a real dnsmasq reading pxefilterd's layouts.

4. Cold start and SIGHUP, per size and layout: (a) one file per MAC,
   (b) the base hosts file (N lines) + the wildcard file.  The time until
   dnsmasq answers a known-allowed MAC again is taken with the timing
   prober (:mod:`.prober`: a DISCOVER every 10 ms); dnsmasq's CPU time and
   RSS come from /proc.

6. Bursts: dnsmasq reads N per-MAC files; K of them flip from deny to allow
   through ``HostsDir.apply`` (staging-dir renames, one inotify event
   each), as fast as possible or paced like the service does beyond
   ``max_burst``.  dnsmasq logs ``read <file>`` for every file it re-reads:
   the count of those lines gives the events it processed and its drain
   rate.  Once the log stops growing, ALL K MACs are probed (raw DHCP,
   batches of thousands, silent ones probed again); a MAC still silent is a
   lost update.  Optionally the lease file holds L leases before dnsmasq
   starts: dnsmasq re-checks every lease against its host records after
   each file it reads, so leases slow draining down.
"""

import os
import signal
import time

from pxefilterd import commands
from pxefilterd import macs as macs_mod
from pxefilterd import policy
from pxefilterd import service
from pxefilterd import writer as writer_mod
from pxefilterd_bench import env
from pxefilterd_bench.counters import proc_cpu_seconds
from pxefilterd_bench.prober import Prober
from pxefilterd_harness import dhcp_probe

ALLOW, DENY = policy.Action.ALLOW, policy.Action.DENY
SCENARIO_START = '4 dnsmasq cold start and SIGHUP'
SCENARIO_BURST = '6 bursts: lost updates with a real dnsmasq'
SCENARIO_COST = '6b dnsmasq cost per changed file (records x leases)'
SCENARIO_REC = '6c safe max_burst / burst_rate, derived'
#: Where dnsmasq's answers are wanted within (the issue's target).
START_TARGET = ('<=', 1.0)
#: Highest DISCOVERs/s of a probe round (see :func:`probe_rate`).  dnsmasq
#: (quiet-dhcp, no log-dhcp) answered 10,000 MACs at 4,000/s with 10k
#: records without a drop.
PROBE_RATE = 2500.0
#: MACs probed after the 100k flips (see :func:`run_big_flip`).
BIGFLIP_SAMPLE = 5000
QUIET_SECONDS = 3.0


def _fill(e, macs, allowed=(), unknown=DENY, base=False):
    """Write the initial state (dnsmasq not running)."""
    entries = {m: DENY for m in macs}
    entries.update({m: ALLOW for m in allowed})
    if base:
        e.store.write_base(entries)
    else:
        e.store.apply(entries)
    e.store.apply({macs_mod.WILDCARD: unknown})


def _start_and_wait(e, mac, max_seconds=900.0):
    """Start dnsmasq; return ``(pid, seconds until it offers to mac,
    seconds the start command took)``."""
    with Prober(e.net, interval=0.01, max_seconds=max_seconds) as p:
        t0 = p.go(mac, 'offer')
        pid = e.dm.start(timeout=max_seconds)
        t_started = time.monotonic()
        res = p.result()
    if res.get('timeout'):
        raise RuntimeError('dnsmasq did not answer %s within %.0f s'
                           % (mac, max_seconds))
    return pid, res['t_recv'] - t0, t_started - t0


def _sighup_and_wait(e, pid, mac, max_seconds=900.0):
    """SIGHUP dnsmasq; return seconds until it offers to ``mac`` again.

    The prober starts right after the signal; a DISCOVER is only answered
    once dnsmasq has re-read its hosts (it handles the signal first).
    """
    with Prober(e.net, interval=0.01, max_seconds=max_seconds) as p:
        t0 = time.monotonic()
        os.kill(pid, signal.SIGHUP)
        p.go(mac, 'offer')
        res = p.result()
    if res.get('timeout'):
        raise RuntimeError('dnsmasq did not answer %s within %.0f s of '
                           'SIGHUP' % (mac, max_seconds))
    return res['t_recv'] - t0


# -- scenario 4 ------------------------------------------------------------

def run_startup(report, size, root, layout, probe_sample=100):
    """Cold start + SIGHUP of dnsmasq with ``size`` MACs in ``layout``
    (``files`` or ``base``)."""
    base = layout == 'base'
    label = '%s MACs, %s' % (env.fmt_size(size),
                             'base hosts file' if base
                             else 'per-MAC files')
    macs = env.make_macs(size, prefix='52:54:30')
    target = macs[size // 2]
    allowed = set(spread(macs, probe_sample)) | {target}
    denied_sample = [m for m in spread(macs, 2 * probe_sample)
                     if m not in allowed][:probe_sample]
    with env.DhcpEnv(root, 'start-%s-%d' % (layout, size),
                     base_file=base) as e:
        env.progress('dnsmasq start: %s: writing', label)
        _fill(e, macs, allowed=allowed, base=base)
        env.progress('dnsmasq start: %s: starting', label)
        pid, ready, cmd = _start_and_wait(e, target)
        t_ready = time.monotonic()
        busy_start = env.wait_idle(pid)
        # the last 0.5 s of the wait are the quiet period
        idle_start = max(ready, ready + time.monotonic() - t_ready - 0.5)
        cpu_start = proc_cpu_seconds(pid)
        rss_start, _ = env.rss_mb(pid)
        env.progress('dnsmasq start: %s: answers after %.3f s, idle after '
                     '%.1f s; SIGHUP', label, ready, idle_start)
        hups, idles, cpus = [], [], []
        for _ in range(2):
            cpu0 = proc_cpu_seconds(pid)
            t0 = time.monotonic()
            hups.append(_sighup_and_wait(e, pid, target))
            env.wait_idle(pid)
            idles.append(max(hups[-1], time.monotonic() - t0 - 0.5))
            cpus.append(proc_cpu_seconds(pid) - cpu0)
        rss_hup, hwm = env.rss_mb(pid)
        # the answers must be the right ones, and what each costs dnsmasq
        costs = {}
        wrong = []
        for name, sample, want in (('offered', sorted(allowed), True),
                                   ('ignored', denied_sample, False)):
            cpu0 = proc_cpu_seconds(pid)
            check = dhcp_probe.probe(e.net, sample, timeout=1.0, retries=1,
                                     rate=50)
            costs[name] = ((proc_cpu_seconds(pid) - cpu0)
                           / sum(c.attempts for c in check.values()))
            wrong += [m for m in sample if check[m].offer is not want]
    report.detail('dnsmasq-start-%s-%d' % (layout, size), {
        'ready': ready, 'idle_after_start': idle_start,
        'busy_after_first_answer': busy_start, 'start_command': cmd,
        'cpu_start': cpu_start, 'rss_start_mb': rss_start, 'sighup': hups,
        'sighup_idle': idles, 'sighup_cpu': cpus,
        'rss_after_sighup_mb': rss_hup, 'hwm_mb': hwm, 'wrong': wrong,
        'cpu_per_discover': costs})
    target_row = START_TARGET if base and size >= 100000 else None
    add = report.add
    add(SCENARIO_START, label, 'cold start until DHCP answered', ready, 's',
        target=target_row)
    add(SCENARIO_START, label, 'cold start until dnsmasq idle',
        idle_start, 's', target=target_row,
        note='dnsmasq CPU %.3f s' % cpu_start)
    add(SCENARIO_START, label, 'SIGHUP until DHCP answered', max(hups), 's',
        target=target_row, note='worst of %d' % len(hups))
    add(SCENARIO_START, label, 'SIGHUP until dnsmasq idle', max(idles), 's',
        target=target_row, note='worst of %d; dnsmasq CPU %.3f s'
        % (len(idles), max(cpus)))
    add(SCENARIO_START, label, 'dnsmasq RSS after start', rss_start, 'MB')
    add(SCENARIO_START, label, 'dnsmasq RSS after SIGHUPs', rss_hup, 'MB',
        note='peak %.1f MB' % hwm)
    add(SCENARIO_START, label, 'wrong answers once idle', len(wrong),
        target=('==', 0), note='%d allowed + %d denied MACs probed%s'
        % (len(allowed), len(denied_sample),
           (': ' + ', '.join(wrong[:3])) if wrong else ''))
    add(SCENARIO_START, label, 'dnsmasq CPU per offered DISCOVER',
        costs['offered'], 's', note='max %.0f offers/s'
        % (1 / costs['offered'] if costs['offered'] else float('inf')))
    add(SCENARIO_START, label, 'dnsmasq CPU per ignored DISCOVER',
        costs['ignored'], 's')


# -- scenario 6 ------------------------------------------------------------

def _write_leases(e, count):
    """Give dnsmasq ``count`` leases (in its range) before it starts."""
    if not count:
        return []
    lease_macs = env.make_macs(count, prefix='52:54:4f')
    expiry = int(time.time()) + 3600
    lines = ['%d %s 198.51.100.%d * *' % (expiry, m, 100 + i)
             for i, m in enumerate(lease_macs)]
    e.dm.lease_path.write_text('\n'.join(lines) + '\n')
    return lease_macs


def _settle(counter, expected, t0, cap):
    """Follow dnsmasq's log until ``expected`` reads or it stays quiet.

    Returns ``(reads, t_last_read)``.
    """
    last_count = counter.poll()
    t_last = time.monotonic() if last_count else t0
    deadline = t0 + cap
    while True:
        count = counter.poll()
        now = time.monotonic()
        if count != last_count:
            last_count, t_last = count, now
        if count >= expected:
            break
        if now - t_last > QUIET_SECONDS or now > deadline:
            break
        time.sleep(0.05)
    return last_count, t_last


def probe_rate(records):
    """A first-round probe rate dnsmasq can answer with ``records`` host
    records: measured here, it answered ~1,000 DISCOVERs/s at 50k records
    without a drop and dropped ~60% at 2,500/s (its lookup walks every
    record)."""
    return min(PROBE_RATE, max(100.0, 4e7 / max(records, 1)))


def find_lost(macs, probe_round, rate, min_rate=50.0, max_rounds=12):
    """Decide which MACs are really denied, despite dropped probes (pure).

    ``probe_round(macs, rate)`` sends one DISCOVER per MAC and returns
    ``(silent MACs, DISCOVERs dnsmasq dropped)``.  A silence only counts
    in a round without drops: rounds are repeated for the silent MACs,
    halving the rate after every round with drops, and a MAC is lost once
    it stayed silent in two rounds without a drop.

    Returns ``(lost, stats)``; ``stats['undecided']`` counts MACs still
    pending after ``max_rounds``.
    """
    pending = list(macs)
    clean_silences = {}
    rounds = []
    lost = []
    while pending and len(rounds) < max_rounds:
        silent, dropped = probe_round(pending, rate)
        silent_set = set(silent)
        silent = [m for m in pending if m in silent_set]
        rounds.append({'rate': rate, 'probed': len(pending),
                       'silent': len(silent), 'rcvbuf_errors': dropped})
        if dropped:
            rate = max(min_rate, rate / 2)
        else:
            for m in silent:
                clean_silences[m] = clean_silences.get(m, 0) + 1
        lost.extend(m for m in silent if clean_silences.get(m, 0) >= 2)
        pending = [m for m in silent if clean_silences.get(m, 0) < 2]
    return lost, {'rounds': rounds, 'undecided': len(pending),
                  'rcvbuf_errors': sum(r['rcvbuf_errors'] for r in rounds),
                  'clean_rate': next((r['rate'] for r in rounds
                                      if not r['rcvbuf_errors']), None)}


def _lost(e, flipped, records):
    """Probe every flipped MAC; return (the MACs still denied, stats).

    dnsmasq looks a MAC up by walking all its host records, so with tens
    of thousands of records it answers only about a thousand DISCOVERs per
    second and drops the rest from its socket buffer (the server's UDP
    ``RcvbufErrors``): see :func:`find_lost` for how that is told apart
    from a denied MAC.  Each round gives dnsmasq 1 s to answer.
    """
    def probe_round(macs, rate):
        before = e.net.udp_rcvbuf_errors()
        result = dhcp_probe.probe(e.net, macs, timeout=1.0, retries=0,
                                  rate=rate)
        dropped = e.net.udp_rcvbuf_errors() - before
        return [m for m in macs if not result[m].offer], dropped

    return find_lost(flipped, probe_round, probe_rate(records))


def burst_once(e, macs, sentinel, k, pace=None, leases=0, pace_desc='',
               probe=True):
    """One flip of ``k`` files with dnsmasq freshly started on the all-deny
    state; returns a dict of figures.  dnsmasq is stopped afterwards and
    the files are put back to deny.

    ``pace``: None, or a callable returning a fresh writing callable (see
    :func:`pacer`), made just before the first write.
    ``reads_at_write_end``: files dnsmasq had re-read when the writer
    finished; the rest was queued (in the kernel's inotify queue, at most
    ``max_queued_events``) or lost.
    """
    flipped = macs[-k:]
    _write_leases(e, leases)
    pid, ready, _ = _start_and_wait(e, sentinel)
    try:
        needle = ('read %s/' % e.hostsdir).encode()
        counter = env.LogCounter(e.dm.log_path, needle, e.log_size())
        cpu0 = proc_cpu_seconds(pid)
        changes = {m: ALLOW for m in flipped}
        t0 = time.monotonic()
        if pace is not None:
            written = pace()(e.store, changes)
        else:
            written = e.store.apply(changes)
        t_written = time.monotonic()
        at_write_end = counter.poll()
        reads, t_last = _settle(counter, k, t0,
                                cap=max(900.0, 4 * (t_written - t0)))
        cpu = proc_cpu_seconds(pid) - cpu0
        t_settled = time.monotonic()
        lost, probe_stats = (_lost(e, flipped, len(macs) + k + 1) if probe
                             else ([], {}))
    finally:
        e.dm.stop()
    # back to the all-deny state while dnsmasq is stopped
    e.store.apply({m: DENY for m in flipped})
    drain_time = max(t_last - t0, 1e-6)
    return {
        'n': len(macs), 'k': k, 'leases': leases, 'pace': pace_desc,
        'layout': 'base' if e.base_path else 'files',
        'written': written, 'write_seconds': t_written - t0,
        'write_rate': written / max(t_written - t0, 1e-6),
        'reads': reads, 'reads_at_write_end': at_write_end,
        'drain_seconds': drain_time, 'drain_rate': reads / drain_time,
        'dnsmasq_cpu': cpu,
        'cpu_per_event': cpu / reads if reads else None,
        'settle_seconds': t_settled - t0,
        'lost': len(lost) if probe else None,
        'undecided': probe_stats.get('undecided'),
        'lost_sample': lost[:5], 'start_seconds': ready,
        'probe': probe_stats,
    }


def pacer(max_burst, burst_rate):
    """Return ``write(store, changes)``: the changes written the way the
    service's writer paces them while dnsmasq runs and no reload command is
    usable (a token bucket: ``max_burst`` at full speed, then
    ``burst_rate``/s); returns the number written."""
    settings = service.Settings(max_burst=max_burst, burst_rate=burst_rate)

    def write(store, changes):
        current = dict(store.current())
        wildcard = current.pop(macs_mod.WILDCARD, policy.Action.DENY)
        current.update(changes)
        desired = policy.Desired(macs=current, unknown=wildcard)
        out = writer_mod.Writer(store, commands.Command('reload', []),
                                lambda: settings)
        out.dnsmasq_started()
        written = out.converge(desired, current)
        while out.pending:
            time.sleep(out.next_due())
            written += out.converge(desired, current)
        return written

    return write


def run_bursts(report, n, ks, root, leases=0, paced=None):
    """Flip K of N files for every K in ``ks`` (K <= N) at full speed, then
    once paced.  ``paced``: ``(k, max_burst, burst_rate)`` or None."""
    macs = env.make_macs(n, prefix='52:54:40')
    sentinel = env.make_macs(1, prefix='52:54:41')[0]
    results = []
    with env.DhcpEnv(root, 'burst-%d-%d' % (n, leases)) as e:
        env.progress('bursts N=%d: writing %d files', n, n)
        _fill(e, macs, allowed=[sentinel])
        runs = [(k, None) for k in ks if k <= n]
        if paced:
            runs.append((min(paced[0], n), paced[1:]))
        for k, pacing in runs:
            desc = ('paced: %d at full speed, then %d/s' % pacing
                    if pacing else 'full speed')
            env.progress('bursts N=%d L=%d: flipping K=%d (%s)', n, leases,
                         k, desc)
            try:
                res = burst_once(
                    e, macs, sentinel, k, leases=leases,
                    pace=(lambda p=pacing: pacer(*p)) if pacing else None,
                    pace_desc=desc)
            except Exception as exc:
                report.error(SCENARIO_BURST, _burst_label(n, k, leases, desc),
                             '%s: %s' % (type(exc).__name__, exc))
                continue
            env.progress('bursts N=%d K=%d: %d lost, drain %.0f events/s',
                         n, k, res['lost'], res['drain_rate'])
            results.append(res)
            _burst_rows(report, res)
    report.detail('bursts-%d-%d' % (n, leases), results)
    return results


def _probe_note(stats):
    note = '%d probe rounds, first clean at %s/s' % (
        len(stats.get('rounds', ())), _num(stats.get('clean_rate')))
    if stats.get('undecided'):
        note += '; %d UNDECIDED (dnsmasq kept dropping probes)' % (
            stats['undecided'])
    return note


def _num(value):
    return '-' if value is None else '%.0f' % value


def _burst_label(n, k, leases, desc):
    return 'N=%s K=%s%s, %s' % (env.fmt_size(n), env.fmt_size(k),
                                ' L=%d' % leases if leases else '', desc)


def _burst_rows(report, res):
    label = _burst_label(res['n'], res['k'], res['leases'], res['pace'])
    add = report.add
    add(SCENARIO_BURST, label, 'lost updates', res['lost'],
        target=('==', 0) if res['pace'] != 'full speed' else None,
        note='of %d flipped; %s' % (res['k'], _probe_note(res['probe'])))
    add(SCENARIO_BURST, label, 'write time', res['write_seconds'], 's',
        note='%.0f files/s' % res['write_rate'])
    add(SCENARIO_BURST, label, 'dnsmasq reads', res['reads'],
        note='files re-read (its log); %d still queued when the writer '
        'finished' % max(0, res['written'] - res['reads_at_write_end']))
    add(SCENARIO_BURST, label, 'observed drain rate', res['drain_rate'],
        'events/s', note='reads / time to the last read (bounded by the '
        'writer when nothing queued)')
    add(SCENARIO_BURST, label, 'drain capacity',
        1.0 / res['cpu_per_event'] if res['cpu_per_event'] else None,
        'events/s', note='1 / dnsmasq CPU per event (%.1f s CPU)'
        % res['dnsmasq_cpu'])
    add(SCENARIO_BURST, label, 'time to the last read', res['drain_seconds'],
        's')


def run_big_flip(report, n, root, layout, sample=BIGFLIP_SAMPLE):
    """Flip all ``n`` MACs deny -> allow with the reload command:
    ``files``: write every file then SIGHUP; ``base``: rebase + SIGHUP.

    The time to correct answers is the first OFFER to the last MAC written
    (prober running from the SIGHUP on).  dnsmasq then needs about 11 ms of
    CPU per OFFER with 100k per-MAC records (2 ms with the base file), so
    probing all 100k MACs would take it 20 minutes: ``sample`` MACs spread
    evenly over the list (the first and last included) are probed, once
    dnsmasq is idle.
    """
    base = layout == 'base'
    label = 'N=K=%s, %s' % (env.fmt_size(n),
                            'rebase + SIGHUP' if base
                            else 'write all files + SIGHUP')
    macs = env.make_macs(n, prefix='52:54:42')
    sentinel = env.make_macs(1, prefix='52:54:43')[0]
    with env.DhcpEnv(root, 'bigflip-%s-%d' % (layout, n),
                     base_file=base) as e:
        env.progress('big flip %s: writing the initial state', label)
        _fill(e, macs, allowed=[sentinel], base=base)
        pid, ready, _ = _start_and_wait(e, sentinel)
        env.wait_idle(pid)
        env.progress('big flip %s: dnsmasq answers after %.1f s; flipping',
                     label, ready)
        watch = macs[-1]
        with Prober(e.net, interval=0.01, max_seconds=900) as p:
            t0 = time.monotonic()
            if base:
                entries = {m: ALLOW for m in macs}
                entries[sentinel] = ALLOW
                e.store.rebase(entries, DENY)
            else:
                e.store.apply({m: ALLOW for m in macs})
            t_written = time.monotonic()
            os.kill(pid, signal.SIGHUP)
            p.go(watch, 'offer')
            res = p.result()
        if res.get('timeout'):
            raise RuntimeError('no offer to %s within 900 s' % watch)
        first_offer = res['t_recv'] - t0
        env.wait_idle(pid)
        idle = max(first_offer, time.monotonic() - t0 - 0.5)
        env.progress('big flip %s: first offer after %.1f s, dnsmasq idle '
                     'after %.1f s; probing %d MACs', label, first_offer,
                     idle, min(sample, n))
        probed = spread(macs, sample)
        lost, probe_stats = _lost(e, probed, n if base else 2 * n)
    data = {'n': n, 'layout': layout, 'write_seconds': t_written - t0,
            'first_offer': first_offer, 'idle': idle, 'probed': len(probed),
            'lost': len(lost), 'lost_sample': lost[:5],
            'probe': probe_stats, 'start_seconds': ready}
    report.detail('bigflip-%s-%d' % (layout, n), data)
    add = report.add
    add(SCENARIO_BURST, label, 'lost updates', len(lost), target=('==', 0),
        note='%d of the %d MACs probed, spread evenly; %s'
        % (len(probed), n, _probe_note(probe_stats)))
    add(SCENARIO_BURST, label, 'write time', data['write_seconds'], 's')
    add(SCENARIO_BURST, label, 'time to correct answers', first_offer, 's',
        note='write start -> first offer to the last MAC written')
    add(SCENARIO_BURST, label, 'time until dnsmasq idle', idle, 's',
        note='write start -> dnsmasq CPU quiet for 0.5 s')
    return data


def spread(items, count):
    """Return ``count`` items spread evenly, the first and last included."""
    items = list(items)
    if count >= len(items):
        return items
    if count < 2:
        return items[-1:]
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]


def _capacity(result):
    """Events/s dnsmasq can drain with a full core: 1 / CPU per event."""
    per = result.get('cpu_per_event')
    return 1.0 / per if per else None


def recommend(results, queue=16384, margin=0.5):
    """Derive safe defaults from burst and cost results (pure).

    ``max_burst``: the largest K flipped at full speed without a loss
    (below the smallest lossy K), capped at ``margin`` x the inotify queue:
    beyond the queue, events are lost whenever dnsmasq drains slower than
    the writer writes.  ``burst_rate``: ``margin`` x the slowest drain
    capacity (1 / dnsmasq CPU per event) measured without leases, rounded
    down to 100/s; ``burst_rate_with_leases`` the same per (N, leases).
    """
    full = [r for r in results if r.get('pace') == 'full speed']
    lossy = [r['k'] for r in full if r.get('lost')]
    smallest_lossy = min(lossy) if lossy else None
    safe = [r['k'] for r in full if r.get('lost') == 0
            and not r.get('undecided')
            and (smallest_lossy is None or r['k'] < smallest_lossy)]
    largest_safe = max(safe) if safe else None
    cap = int(queue * margin)
    if smallest_lossy is not None:
        cap = min(cap, int(smallest_lossy * margin))
    max_burst = cap if largest_safe else None
    no_leases = [c for c in (_capacity(r) for r in results
                             if not r.get('leases')) if c]
    slowest = min(no_leases) if no_leases else None

    def rate(capacity):
        value = capacity * margin
        return int(value // 100 * 100) if value >= 100 else int(value)

    with_leases = {}
    for r in results:
        c = _capacity(r)
        if r.get('leases') and c:
            key = 'N=%d L=%d' % (r['n'], r['leases'])
            with_leases[key] = min(with_leases.get(key, c), c)
    return {
        'max_burst': max_burst,
        'max_burst_tested': bool(largest_safe and max_burst
                                 and largest_safe >= max_burst),
        'burst_rate': rate(slowest) if slowest else None,
        'largest_safe_k': largest_safe,
        'smallest_lossy_k': smallest_lossy,
        'slowest_capacity': slowest,
        'queue': queue,
        'capacity_with_leases': with_leases,
        'burst_rate_with_leases': {k: rate(v)
                                   for k, v in with_leases.items()},
    }


def defaults_safety(burst_results, cost_results, max_burst, burst_rate,
                    queue=16384):
    """Whether ``max_burst``/``burst_rate`` are safe under each measured
    condition (pure): the first burst must fit the inotify queue and every
    paced file must be drained faster than it is written."""
    rows = []
    seen = set()
    for r in burst_results + cost_results:
        c = _capacity(r)
        key = (r['n'], r.get('leases', 0), r.get('layout', 'files'))
        if not c or key in seen:
            continue
        seen.add(key)
        rows.append({'n': r['n'], 'leases': key[1], 'layout': key[2],
                     'capacity': c, 'max_burst_ok': max_burst < queue,
                     'burst_rate_ok': burst_rate < c,
                     'seconds_to_drain_max_burst': max_burst / c})
    paced = [r for r in burst_results if r.get('pace') not in
             ('full speed', 'cost')]
    return {'conditions': rows,
            'paced_runs': [{'n': r['n'], 'k': r['k'], 'pace': r['pace'],
                            'lost': r['lost']} for r in paced]}


def recommendation_rows(report, rec, safety):
    scen = SCENARIO_REC
    add = report.add
    add(scen, 'full speed, no leases', 'largest K without loss',
        rec['largest_safe_k'],
        note='smallest lossy K: %s; inotify queue %d'
        % (rec['smallest_lossy_k'], rec['queue']))
    add(scen, 'full speed, no leases', 'recommended max_burst',
        rec['max_burst'],
        note='half the queue or of the smallest lossy K; %s'
        % ('a lossless run at or above it' if rec['max_burst_tested']
           else 'NOT confirmed by a lossless run that large'))
    add(scen, 'paced, no leases', 'slowest dnsmasq drain capacity',
        rec['slowest_capacity'], 'events/s', note='1 / CPU per event')
    add(scen, 'paced, no leases', 'recommended burst_rate',
        rec['burst_rate'], 'files/s', note='half the slowest capacity')
    for key, value in sorted(rec['burst_rate_with_leases'].items()):
        add(scen, 'paced, %s' % key, 'safe burst_rate', value, 'files/s',
            note='capacity %.1f events/s'
            % rec['capacity_with_leases'][key])
    for cond in safety['conditions']:
        label = 'defaults at N=%s L=%d (%s)' % (
            env.fmt_size(cond['n']), cond['leases'], cond['layout'])
        add(scen, label, 'burst_rate below drain capacity',
            cond['burst_rate_ok'],
            note='capacity %.0f events/s; max_burst drained in %.1f s'
            % (cond['capacity'], cond['seconds_to_drain_max_burst']))
    for run in safety['paced_runs']:
        add(scen, 'paced run N=%s K=%s' % (env.fmt_size(run['n']),
                                           env.fmt_size(run['k'])),
            'lost updates', run['lost'], target=('==', 0), note=run['pace'])


def inotify_queue():
    try:
        with open('/proc/sys/fs/inotify/max_queued_events') as f:
            return int(f.read())
    except (OSError, ValueError):
        return 16384


def cost_k(n, leases, budget=15.0):
    """Files to flip for a cost measurement of about ``budget`` seconds of
    dnsmasq CPU (from ~25 ns per lease x record, measured here)."""
    if not leases:
        return int(min(2000, budget * 300))
    return int(max(20, min(500, budget / (2.5e-8 * leases * n))))


def reload_cost(e, sentinel, leases):
    """dnsmasq CPU of one SIGHUP (re-read of every hosts file and the
    hostsdir, then the lease check) with ``leases`` leases."""
    _write_leases(e, leases)
    pid, _, _ = _start_and_wait(e, sentinel)
    try:
        cpu0 = proc_cpu_seconds(pid)
        answer = _sighup_and_wait(e, pid, sentinel)
        env.wait_idle(pid)
        cpu = proc_cpu_seconds(pid) - cpu0
    finally:
        e.dm.stop()
    return {'cpu': cpu, 'answer': answer}


def run_event_cost(report, n, leases_list, root, layout='files',
                   budget=15.0):
    """dnsmasq CPU per changed file with N records and L leases.

    dnsmasq re-checks every lease against its host records after each file
    it re-reads, so this cost sets the drain rate (1 / cost) that
    ``burst_rate`` must stay under.
    """
    base = layout == 'base'
    macs = env.make_macs(n, prefix='52:54:44')
    sentinel = env.make_macs(1, prefix='52:54:45')[0]
    results = []
    with env.DhcpEnv(root, 'cost-%s-%d' % (layout, n), base_file=base) as e:
        env.progress('event cost N=%d (%s): writing', n, layout)
        _fill(e, macs, allowed=[sentinel], base=base)
        for leases in leases_list:
            k = cost_k(n, leases, budget)
            label = 'N=%s %s, L=%d leases' % (
                env.fmt_size(n), 'base file' if base else 'per-MAC files',
                leases)
            env.progress('event cost %s: flipping %d', label, k)
            try:
                res = burst_once(e, macs, sentinel, k, leases=leases,
                                 pace_desc='cost')
            except Exception as exc:
                report.error(SCENARIO_COST, label,
                             '%s: %s' % (type(exc).__name__, exc))
                continue
            results.append(res)
            per = res['cpu_per_event']
            report.add(SCENARIO_COST, label, 'dnsmasq CPU per changed file',
                       per, 's', note='%d files; %s lost' % (k, res['lost']))
            report.add(SCENARIO_COST, label, 'max drain rate',
                       1.0 / per if per else None, 'events/s',
                       note='1 / CPU per file')
            try:
                res['sighup'] = reload_cost(e, sentinel, leases)
            except Exception as exc:
                report.error(SCENARIO_COST, label + ' SIGHUP',
                             '%s: %s' % (type(exc).__name__, exc))
                continue
            report.add(SCENARIO_COST, label, 'dnsmasq CPU per SIGHUP',
                       res['sighup']['cpu'], 's',
                       note='answers again after %.3f s; = %.0f changed files'
                       % (res['sighup']['answer'],
                          res['sighup']['cpu'] / per if per else 0))
    report.detail('event-cost-%s-%d' % (layout, n), results)
    return results
