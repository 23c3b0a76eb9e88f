"""Shared set-up for the scenarios: work directories, MAC lists, bulk-loaded
ironic fixtures and dnsmasq-in-a-namespace environments.

Everything here cleans up after itself (processes by PID, namespaces,
directories), also when the scenario using it fails.
"""

import contextlib
import itertools
import os
import pathlib
import shutil
import sys
import tempfile
import time

_START = time.monotonic()
_quiet = False


def set_quiet(quiet):
    global _quiet
    _quiet = quiet


def progress(message, *args):
    """Print a progress line on stderr, with the run's elapsed time."""
    if _quiet:
        return
    text = message % args if args else message
    sys.stderr.write('[%7.1f s] %s\n' % (time.monotonic() - _START, text))
    sys.stderr.flush()


@contextlib.contextmanager
def workdir(parent=None, prefix='pxf-bench-'):
    """A fresh 0755 directory (dnsmasq reads below it as ``nobody``),
    removed afterwards."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent or '/tmp')
    os.chmod(path, 0o755)
    try:
        yield pathlib.Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_macs(count, prefix='52:54:10'):
    """Return ``count`` distinct lowercase MACs: prefix + running counter.
    """
    octets = prefix.split(':')
    free = 6 - len(octets)
    if count > 256 ** free:
        raise ValueError('%d MACs do not fit behind %s' % (count, prefix))
    result = []
    for i in range(count):
        raw = i.to_bytes(free, 'big').hex()
        result.append(':'.join(octets + [raw[j:j + 2]
                                         for j in range(0, 2 * free, 2)]))
    return result


def fmt_size(size):
    """1000 -> '1k', 100000 -> '100k', 1500 -> '1500'."""
    if size % 1000 == 0:
        return '%dk' % (size // 1000)
    return str(size)


# -- ironic ----------------------------------------------------------------

PORTS_PER_NODE = 2


class IronicFixtures:
    """Bulk-loaded ironic databases, built once per size, copied per use.

    A fixture of N ports has N/2 fake-hardware nodes (manageable, inspect
    interface ``agent``) with 2 ports each.
    """

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self._templates = {}
        self._count = itertools.count()
        self._schema = None

    def template(self, size):
        """Return ``(db_path, BulkLoad)`` of the template for ``size``."""
        from pxefilterd_harness.ironic import IronicService
        if size not in self._templates:
            nodes = max(1, size // PORTS_PER_NODE)
            progress('ironic fixture: bulk-loading %d nodes, %d ports',
                     nodes, nodes * PORTS_PER_NODE)
            svc = IronicService(self.root / ('template-%d' % size))
            try:
                if self._schema is not None:
                    # an empty database with the schema: prepare() keeps it
                    shutil.copyfile(self._schema, svc.db_path)
                else:
                    svc.prepare()
                    self._schema = self.root / 'schema.db'
                    shutil.copyfile(svc.db_path, self._schema)
                load = svc.bulk_load(nodes, PORTS_PER_NODE, '52:54:10')
            finally:
                svc.close()
            progress('ironic fixture: loaded in %.1f s', load.seconds)
            self._templates[size] = (svc.db_path, load)
        return self._templates[size]

    @contextlib.contextmanager
    def started(self, size, **kwargs):
        """Yield ``(IronicService, BulkLoad)``: a running ironic on a copy of
        the template database; stopped and removed afterwards."""
        from pxefilterd_harness.ironic import IronicService
        db, load = self.template(size)
        wd = self.root / ('ironic-%d-%d' % (size, next(self._count)))
        svc = IronicService(wd, **kwargs)
        try:
            shutil.copyfile(db, svc.db_path)
            started = time.monotonic()
            svc.start(timeout=180)
            progress('ironic with %d ports up in %.1f s (%s)', size,
                     time.monotonic() - started, svc.url)
            yield svc, load
        finally:
            svc.close()
            shutil.rmtree(wd, ignore_errors=True)


def sdk_connection(url):
    """An openstacksdk Connection to a standalone (noauth) ironic."""
    import openstack.connection
    return openstack.connection.Connection(
        auth_type='none', baremetal_endpoint_override=url)


# -- dnsmasq ------------------------------------------------------------------

class DhcpEnv:
    """A network namespace pair, a hostsdir (our :class:`HostsDir`) and a
    configured, not started dnsmasq.

    dnsmasq runs without ``log-dhcp`` and with ``quiet-dhcp`` so that probes
    do not flood its log; it still logs ``inotify: ...`` and ``read <file>``
    for every hostsdir file it reads, which is how drain rates are measured.

    :param base_file: also give dnsmasq a ``--dhcp-hostsfile`` (the
        "base hosts file" layout) and the store its ``base_path``.
    :param log_dhcp: keep dnsmasq's ``log-dhcp`` (and no ``quiet-dhcp``).
    :param vms: a :class:`~pxefilterd_harness.vm.VmNetwork` (a bridge for
        qemu VMs) and dnsmasq's options to boot real firmware.
    """

    def __init__(self, root, name, base_file=False, log_dhcp=False,
                 vms=False):
        from pxefilterd import hostsdir
        from pxefilterd_harness.dnsmasq import DnsmasqInstance
        from pxefilterd_harness.netns import DhcpNetwork
        from pxefilterd_harness import vm
        self.root = pathlib.Path(root) / name
        self.root.mkdir(mode=0o755)
        os.chmod(self.root, 0o755)
        self.hostsdir = self.root / 'hostsdir'
        self.hostsdir.mkdir(mode=0o755)
        os.chmod(self.hostsdir, 0o755)
        self.base_path = self.root / 'dhcp-hostsfile' if base_file else None
        self.store = hostsdir.HostsDir(str(self.hostsdir),
                                       base_path=self.base_path and
                                       str(self.base_path))
        self.store.check()
        self.net = (vm.VmNetwork(prefix='pxb', workdir=self.root / 'net')
                    if vms else DhcpNetwork(prefix='pxb'))
        try:
            extra = [] if log_dhcp else ['quiet-dhcp']
            if vms:
                extra.extend(vm.boot_options(
                    vm.prepare_tftp_root(self.root / 'tftp')))
            if base_file:
                extra.append('dhcp-hostsfile=%s' % self.base_path)
            self.dm = DnsmasqInstance(self.net, self.hostsdir,
                                      self.root / 'dnsmasq',
                                      extra_options=tuple(extra))
            if not log_dhcp:
                conf = self.dm.conf_path.read_text()
                self.dm.conf_path.write_text(
                    conf.replace('\nlog-dhcp\n', '\n'))
        except BaseException:
            self.net.close()
            raise

    def close(self):
        errors = []
        for step in (self.dm.stop, self.net.close):
            try:
                step()
            except Exception as exc:   # keep cleaning up
                errors.append('%s: %s' % (step.__qualname__, exc))
        if errors:
            raise RuntimeError('cleanup: ' + '; '.join(errors))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- dnsmasq log --------------------------------------------------------

    def log_size(self):
        try:
            return self.dm.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def count_log(self, needle, offset=0):
        """Count ``needle`` in dnsmasq's log from byte ``offset`` on."""
        try:
            with open(self.dm.log_path, 'rb') as f:
                f.seek(offset)
                return f.read().count(needle)
        except FileNotFoundError:
            return 0


class LogCounter:
    """Counts a needle in a growing log file incrementally (cheap polling)."""

    def __init__(self, path, needle, offset=0):
        self.path = path
        self.needle = needle
        self.offset = offset
        self.count = 0
        self._tail = b''

    def poll(self):
        try:
            with open(self.path, 'rb') as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.count
        if not data:
            return self.count
        self.offset += len(data)
        data = self._tail + data
        cut = data.rfind(b'\n') + 1
        self.count += data[:cut].count(self.needle)
        self._tail = data[cut:]
        return self.count


def rss_mb(pid):
    """Return ``(VmRSS, VmHWM)`` of ``pid`` in MB."""
    from pxefilterd_bench.counters import proc_status_kb
    kb = proc_status_kb(pid)
    return kb.get('VmRSS', 0) / 1024.0, kb.get('VmHWM', 0) / 1024.0


def wait_idle(pid, quiet=0.5, cap=900.0):
    """Wait until ``pid`` used (almost) no CPU for ``quiet`` seconds;
    return the seconds waited."""
    from pxefilterd_bench.counters import proc_cpu_seconds
    t0 = time.monotonic()
    last = proc_cpu_seconds(pid)
    while time.monotonic() - t0 < cap:
        time.sleep(quiet)
        now = proc_cpu_seconds(pid)
        if now - last < 0.02:
            break
        last = now
    return time.monotonic() - t0
