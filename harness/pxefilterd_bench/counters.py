"""Counting the file-system calls a sync makes, and process CPU / memory.

:class:`SyscallCounter` counts, while active, the Python-level calls that
touch a file below a given directory: the audit events ``open`` (``open()``
and ``os.open``), ``os.rename``, ``os.remove``, ``os.chmod`` (also
``os.fchmod``), ``os.listdir`` and ``os.scandir`` (``sys.addaudithook``),
plus ``os.stat`` and ``os.lstat`` (wrapped while counting: they raise no
audit event).  "Per-file" calls are all but the directory listings.

The kernel's own count of read/write system calls of this process
(``syscr``/``syscw`` of ``/proc/self/io``) is taken alongside.
"""

import contextlib
import os
import sys
import time

_PER_FILE_EVENTS = {
    'open': 'open', 'os.rename': 'rename', 'os.remove': 'remove',
    'os.chmod': 'chmod',
}
_DIR_EVENTS = {'os.listdir': 'listdir', 'os.scandir': 'scandir'}
_KINDS = ('open', 'stat', 'rename', 'remove', 'chmod', 'listdir', 'scandir')


def proc_io(pid='self'):
    """Return ``{'syscr': n, 'syscw': n, ...}`` from /proc/PID/io, or {}."""
    try:
        with open('/proc/%s/io' % pid) as f:
            return {k: int(v) for k, v in
                    (line.split(':', 1) for line in f if ':' in line)}
    except OSError:
        return {}


def proc_status_kb(pid, fields=('VmRSS', 'VmHWM')):
    """Return ``{field: kB}`` from /proc/PID/status (missing fields left out).
    """
    result = {}
    with open('/proc/%s/status' % pid) as f:
        for line in f:
            name, _, rest = line.partition(':')
            if name in fields:
                result[name] = int(rest.split()[0])
    return result


def proc_cpu_seconds(pid):
    """Return utime + stime of ``pid`` in seconds (children not included).
    """
    with open('/proc/%s/stat' % pid, 'rb') as f:
        data = f.read()
    fields = data[data.rindex(b')') + 2:].split()
    ticks = os.sysconf('SC_CLK_TCK')
    return (int(fields[11]) + int(fields[12])) / ticks


class SyscallCounter:
    """Counts file calls below ``root`` while :meth:`counting` is active.

    The audit hook is installed once per process (hooks cannot be removed)
    and does nothing while no counting is active.
    """

    _installed = None

    def __init__(self):
        self.active = None
        self.counts = dict.fromkeys(_KINDS, 0)

    @classmethod
    def get(cls):
        """Return the process-wide counter, installing the hook once."""
        if cls._installed is None:
            counter = cls()
            sys.addaudithook(counter._hook)
            cls._installed = counter
        return cls._installed

    def _inside(self, path):
        if isinstance(path, int):
            return True      # an fd (fchmod): we opened it while counting
        if hasattr(path, '__fspath__'):
            path = os.fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return False
        if not path.startswith('/'):
            path = os.path.abspath(path)
        return path.startswith(self.active) or path == self.active[:-1]

    def _hook(self, event, args):
        if self.active is None:
            return
        kind = _PER_FILE_EVENTS.get(event) or _DIR_EVENTS.get(event)
        if kind is None or not args:
            return
        if self._inside(args[0]):
            self.counts[kind] += 1

    @contextlib.contextmanager
    def counting(self, root, trace=True):
        """Count calls below ``root``; yields a dict filled in at exit with
        ``per_file``, ``listings``, every kind, ``syscr``/``syscw`` deltas,
        ``wall`` and ``cpu`` seconds.

        With ``trace=False`` only the time and the /proc/self/io deltas are
        taken: the hook and the stat wrapper cost about a microsecond per
        call, so timed runs are made without them.
        """
        result = {}
        self.counts = dict.fromkeys(_KINDS, 0)
        if not trace:
            io_before = proc_io()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            try:
                yield result
            finally:
                result['wall'] = time.perf_counter() - wall0
                result['cpu'] = time.process_time() - cpu0
                _io_delta(result, io_before, proc_io())
            return
        self.active = os.path.abspath(root) + os.sep
        real_stat, real_lstat = os.stat, os.lstat
        counts = self.counts

        def stat(path, *args, **kwargs):
            if self._inside(path):
                counts['stat'] += 1
            return real_stat(path, *args, **kwargs)

        def lstat(path, *args, **kwargs):
            if self._inside(path):
                counts['stat'] += 1
            return real_lstat(path, *args, **kwargs)

        io_before = proc_io()
        os.stat, os.lstat = stat, lstat
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            yield result
        finally:
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            os.stat, os.lstat = real_stat, real_lstat
            self.active = None
            io_after = proc_io()
            result.update(counts)
            result['per_file'] = sum(counts[k] for k in
                                     ('open', 'stat', 'rename', 'remove',
                                      'chmod'))
            result['listings'] = counts['listdir'] + counts['scandir']
            _io_delta(result, io_before, io_after)
            result['wall'] = wall
            result['cpu'] = cpu


def _io_overhead():
    """syscr/syscw that reading /proc/self/io twice adds by itself."""
    first = proc_io()
    second = proc_io()
    return {k: second[k] - first[k] for k in ('syscr', 'syscw')
            if k in first and k in second}


_OVERHEAD = None


def _io_delta(result, before, after):
    global _OVERHEAD
    if _OVERHEAD is None:
        _OVERHEAD = _io_overhead()
    for key in ('syscr', 'syscw'):
        if key in before and key in after:
            result[key] = max(0, after[key] - before[key]
                              - _OVERHEAD.get(key, 0))
