"""A timing DHCP prober: one MAC, a DHCPDISCOVER every few ms, until the
answer changes.

Run inside the client namespace (``ip netns exec``) as
``python -I -m pxefilterd_bench.prober --iface IF``.  It opens its
AF_PACKET socket, prints ``READY``, then for each ``GO <until> <mac>`` line
on stdin (the caller takes its t0 with the socket already open) sends a
DISCOVER for that MAC (fresh xid each) every ``--interval`` seconds and
prints one JSON line when done:

- ``GO offer MAC``: at the first OFFER to any of its DISCOVERs:
  ``{"t_send": ..., "t_recv": ..., "sent": n}`` (``time.monotonic()``;
  CLOCK_MONOTONIC is shared by every namespace, so the caller can compare).
- ``GO silence MAC``: when ``--confirm`` consecutive DISCOVERs each got no
  OFFER within ``--timeout``: ``{"t_silent": send time of the first of
  them, ...}``.

After ``--max-seconds`` it gives up: ``{"timeout": true, ...}``.

A ``SCHED <json>`` line runs a whole schedule instead (load and storm
measurements, see :func:`run_schedule`): ``{"sends": [[offset, mac],
...], "listen": seconds, "stop_on_offer": bool}``; the answer is one JSON
line ``{"t0": ..., "sends": [[offset, mac, latency or null], ...],
"skipped": n}``.

:class:`Prober` runs it from the benchmark.  Frames are built and parsed by
:mod:`pxefilterd_harness.dhcp_probe` (standard library only).
"""

import argparse
import json
import random
import select
import socket
import subprocess
import sys
import time

from pxefilterd_harness import dhcp_probe

SO_RCVBUFFORCE = 33


class Tracker:
    """Decides, from send and answer times, when the wanted state is seen.

    Pure: the prober feeds it :meth:`sent` / :meth:`answered` and asks
    :meth:`result` with the current time.

    :param mode: ``offer`` or ``silence``.
    :param timeout: a DISCOVER without an OFFER after this long is silent.
    :param confirm: consecutive silent DISCOVERs that make "silence".
    """

    def __init__(self, mode, timeout=0.1, confirm=3):
        if mode not in ('offer', 'silence'):
            raise ValueError('mode must be offer or silence: %r' % (mode,))
        self.mode = mode
        self.timeout = timeout
        self.confirm = confirm
        self.sends = []
        self.answers = {}

    def sent(self, t):
        """Record a DISCOVER sent at ``t``; return its index."""
        self.sends.append(t)
        return len(self.sends) - 1

    def answered(self, index, t):
        """Record an OFFER received at ``t`` for DISCOVER ``index``."""
        if index not in self.answers:
            self.answers[index] = t

    def _in_time(self, index):
        t = self.answers.get(index)
        return t is not None and t - self.sends[index] <= self.timeout

    def result(self, now):
        """Return the result dict once the wanted state is seen, else None.
        """
        if self.mode == 'offer':
            if not self.answers:
                return None
            index = min(self.answers, key=self.answers.get)
            return {'t_send': self.sends[index],
                    't_recv': self.answers[index], 'index': index,
                    'sent': len(self.sends)}
        matured = [i for i, t in enumerate(self.sends)
                   if now - t >= self.timeout]
        if not matured:
            return None
        answered = [i for i in matured if self._in_time(i)]
        start = answered[-1] + 1 if answered else 0
        # any DISCOVER after ``start`` answered in time breaks the run
        silent = [i for i in matured if i >= start]
        if len(silent) < self.confirm:
            return None
        return {'t_silent': self.sends[start], 'index': start,
                'sent': len(self.sends),
                'answered': len(self.answers)}


def _open_socket(iface):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                         socket.htons(dhcp_probe.ETH_P_IP))
    try:
        sock.bind((iface, dhcp_probe.ETH_P_IP))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(dhcp_probe.SOL_PACKET,
                        dhcp_probe.PACKET_IGNORE_OUTGOING, 1)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _watch(sock, mac, until, interval, timeout, confirm, max_seconds):
    """Probe ``mac`` until ``until`` is seen; return the result dict."""
    raw = bytes.fromhex(dhcp_probe.normalize_mac(mac).replace(':', ''))
    tracker = Tracker(until, timeout, confirm)
    xid_base = random.getrandbits(32)
    by_xid = {}
    started = time.monotonic()
    next_send = started
    result = None
    while result is None:
        now = time.monotonic()
        if now >= next_send:
            xid = (xid_base + len(tracker.sends)) & 0xFFFFFFFF
            try:
                sock.send(dhcp_probe.build_discover(raw, xid))
            except OSError:
                pass       # ENOBUFS: the next round sends again
            by_xid[xid] = tracker.sent(now)
            next_send = max(next_send + interval, now + interval / 2)
        select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                break
            t = time.monotonic()
            parsed = dhcp_probe.parse_offer(data)
            if parsed is None or parsed[1] != raw:
                continue
            index = by_xid.get(parsed[0])
            if index is not None:
                tracker.answered(index, t)
        now = time.monotonic()
        result = tracker.result(now)
        if result is None and now - started > max_seconds:
            result = {'timeout': True, 'sent': len(tracker.sends),
                      'answered': len(tracker.answers)}
    result['t_go'] = started
    result['mac'] = mac
    return result


def run_schedule(sock, sends, listen, stop_on_offer=False):
    """Send a DISCOVER for each ``(offset, mac)`` of ``sends`` (sorted by
    offset, seconds after the start), each with its own xid, and collect
    the OFFERs until ``listen`` seconds after the last send.

    With ``stop_on_offer`` a MAC that got an offer sends no more (a
    firmware that got its answer).  Returns ``(t0, results, skipped)``:
    ``[offset, mac, latency or None]`` per DISCOVER sent.
    """
    raws = {}
    by_xid = {}
    results = []
    answered_macs = set()
    skipped = 0
    xid = random.getrandbits(32)
    t0 = time.monotonic()
    index = 0
    last = sends[-1][0] if sends else 0.0
    while True:
        now = time.monotonic()
        while index < len(sends) and t0 + sends[index][0] <= now:
            offset, mac = sends[index]
            index += 1
            if stop_on_offer and mac in answered_macs:
                skipped += 1
                continue
            raw = raws.get(mac)
            if raw is None:
                raw = raws[mac] = bytes.fromhex(
                    dhcp_probe.normalize_mac(mac).replace(':', ''))
            xid = (xid + 1) & 0xFFFFFFFF
            try:
                sock.send(dhcp_probe.build_discover(raw, xid))
            except OSError:
                pass       # ENOBUFS: counted as unanswered
            by_xid[xid] = len(results)
            results.append([time.monotonic() - t0, mac, None])
        if index >= len(sends) and now > t0 + last + listen:
            break
        wait = (t0 + sends[index][0] - now if index < len(sends)
                else t0 + last + listen - now)
        select.select([sock], [], [], max(0.0, min(wait, 0.05)))
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                break
            t = time.monotonic() - t0
            parsed = dhcp_probe.parse_offer(data)
            if parsed is None:
                continue
            i = by_xid.get(parsed[0])
            if i is not None and results[i][2] is None \
                    and raws.get(results[i][1]) == parsed[1]:
                results[i][2] = t - results[i][0]
                answered_macs.add(results[i][1])
    return t0, results, skipped


def serve(iface, interval, timeout, confirm, max_seconds, out=sys.stdout,
          inp=sys.stdin):
    """The prober's main loop (runs in the client namespace): one
    ``GO <offer|silence> <mac>`` line in, one JSON line out, until EOF."""
    sock = _open_socket(iface)
    try:
        out.write('READY\n')
        out.flush()
        for line in inp:
            if line.startswith('SCHED '):
                plan = json.loads(line[6:])
                t0, results, skipped = run_schedule(
                    sock, plan['sends'], plan['listen'],
                    plan.get('stop_on_offer', False))
                out.write(json.dumps({'t0': t0, 'sends': results,
                                      'skipped': skipped}) + '\n')
                out.flush()
                continue
            words = line.split()
            if len(words) != 3 or words[0] != 'GO' \
                    or words[1] not in ('offer', 'silence'):
                out.write(json.dumps({'error': 'bad command %r' % line})
                          + '\n')
                out.flush()
                continue
            result = _watch(sock, words[2], words[1], interval, timeout,
                            confirm, max_seconds)
            out.write(json.dumps(result) + '\n')
            out.flush()
        return 0
    finally:
        sock.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--iface', required=True)
    parser.add_argument('--interval', type=float, default=0.02)
    parser.add_argument('--timeout', type=float, default=0.1)
    parser.add_argument('--confirm', type=int, default=3)
    parser.add_argument('--max-seconds', type=float, default=60.0)
    args = parser.parse_args(argv)
    return serve(args.iface, args.interval, args.timeout, args.confirm,
                 args.max_seconds)


class ProberError(RuntimeError):
    pass


class Prober:
    """Runs the prober in ``network``'s client namespace; by PID only.

    Construct (waits for READY), then for each measurement :meth:`go`
    and :meth:`result`; :meth:`close` (or ``with``) ends it.
    """

    def __init__(self, network, interval=0.02, timeout=0.1, confirm=3,
                 max_seconds=60.0, start_timeout=15.0):
        self.max_seconds = max_seconds
        argv = network.client_argv([
            sys.executable, '-I', '-m', 'pxefilterd_bench.prober',
            '--iface', network.client_iface,
            '--interval', str(interval), '--timeout', str(timeout),
            '--confirm', str(confirm), '--max-seconds', str(max_seconds)])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        try:
            line = self._readline(start_timeout)
            if line.strip() != 'READY':
                raise ProberError('prober did not start: %r %s'
                                  % (line, self._stderr()))
        except BaseException:
            self.close()
            raise

    def _readline(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise ProberError('prober silent for %.0f s' % timeout)
        return self.proc.stdout.readline()

    def _stderr(self):
        if self.proc.poll() is None:
            return ''
        return self.proc.stderr.read()[-2000:]

    def go(self, mac, until):
        """Start probing ``mac`` until ``until`` (offer or silence) now;
        return ``time.monotonic()`` taken just before."""
        t = time.monotonic()
        self.proc.stdin.write('GO %s %s\n' % (until, mac))
        self.proc.stdin.flush()
        return t

    def schedule(self, sends, listen, stop_on_offer=False):
        """Run :func:`run_schedule` in the prober; return its result
        dict (``t0``, ``sends``, ``skipped``)."""
        self.proc.stdin.write('SCHED %s\n' % json.dumps(
            {'sends': sends, 'listen': listen,
             'stop_on_offer': stop_on_offer}))
        self.proc.stdin.flush()
        span = sends[-1][0] if sends else 0.0
        line = self._readline(span + listen + 30)
        if not line:
            raise ProberError('prober exited without a result: %s'
                              % self._stderr())
        return json.loads(line)

    def result(self):
        """Wait for and return the prober's JSON result."""
        line = self._readline(self.max_seconds + 15)
        if not line:
            raise ProberError('prober exited without a result: %s'
                              % self._stderr())
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


if __name__ == '__main__':
    sys.exit(main())
