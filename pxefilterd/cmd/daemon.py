"""``pxefilterd``: the daemon, in the foreground."""

import ctypes
import functools
import grp
import logging
import os
import shlex
import signal
import sys

from oslo_config import cfg
from oslo_log import log

from pxefilterd import checks
from pxefilterd import child as child_mod
from pxefilterd import commands
from pxefilterd import conf as pxf_conf
from pxefilterd import control
from pxefilterd import dnsmasq as dnsmasq_mod
from pxefilterd import guard
from pxefilterd import hostsdir
from pxefilterd import ironic
from pxefilterd import metrics
from pxefilterd import notify
from pxefilterd import service
from pxefilterd import wakeup
from pxefilterd import watcher

LOG = logging.getLogger('pxefilterd')
DESCRIPTION = (
    'The ironic PXE filter for an inspection dnsmasq.  pxefilterd follows '
    'ironic (the nodes under in-band inspection, every port) and keeps a '
    'dnsmasq dhcp-hostsdir in step, one file per MAC: the ports of nodes '
    'under inspection may PXE boot, every other port ironic knows is '
    'ignored, and MACs ironic does not know follow [pxe_filter] '
    'deny_unknown_macs / auto_discovery.  It starts dnsmasq (through '
    'root_helper) only once the directory reflects ironic, restarts it if it '
    'dies, and stops it when pxefilterd exits or dies, so that a stale list '
    'is never served.  Runs in the foreground (systemd Type=notify); SIGHUP '
    're-reads the mutable options, SIGTERM stops.')
EPILOG = ('Exit status: 0 stopped by a signal, 1 runtime failure, 78 '
          'configuration error.  See also: pxefilterd-ctl (status, explain, '
          'sync, check-config) and the administrator guide.')
CONF = pxf_conf.CONF


def load_config(conf, argv):
    """Parse the command line and config files; return problem lines.

    Never raises for bad configuration: every problem becomes one line
    naming the option, the value and what is wrong.
    """
    try:
        log.register_options(conf)
    except cfg.ArgsAlreadyParsedError:
        pass
    return (checks.parse(conf, argv, description=DESCRIPTION, epilog=EPILOG)
            or checks.check(conf))


def settings_from_conf(conf):
    """Return :class:`service.Settings`; raise ValueError on a conflict."""
    pf = conf.pxe_filter
    return service.Settings(
        sync_period=pf.sync_period,
        poll_interval=pf.inspection_poll_interval,
        idle_poll_interval=pf.idle_poll_interval,
        options=pxf_conf.policy_options(conf),
        max_stale_seconds=pf.max_stale_seconds,
        purge=conf.dnsmasq_pxe_filter.purge_dhcp_hostsdir,
        lock_wait=conf.dnsmasq_pxe_filter.lock_wait,
        max_burst=conf.dnsmasq_pxe_filter.max_burst,
        burst_rate=conf.dnsmasq_pxe_filter.burst_rate,
        compaction_interval=conf.dnsmasq_pxe_filter.compaction_interval * 60,
        compaction_threshold=conf.dnsmasq_pxe_filter.compaction_threshold,
        port_fetches_per_poll=pf.port_fetches_per_poll)


def build_service(conf):
    """Wire the real objects together from ``conf``."""
    dn = conf.dnsmasq_pxe_filter

    def reload_settings():
        conf.mutate_config_files()
        return settings_from_conf(conf)

    child = None
    if dn.dnsmasq_child_command:
        # Watched directly: no pid file.
        child = child_mod.Child(child_mod.argv_from_line(
            dn.dnsmasq_child_command), timeout=dn.command_timeout)
        cmds = child_mod.ChildCommands(child)
        pid_path = None
        LOG.info('dnsmasq runs as a child of pxefilterd: %s',
                 shlex.join(child.argv))
        if os.getpid() == 1:
            LOG.warning('pxefilterd runs as PID 1: processes orphaned in '
                        'this pid namespace are not reaped; run it under an '
                        'init (tini, or podman/docker run --init)')
    else:
        cmds = commands.Commands.from_conf(conf)
        pid_source = dnsmasq_mod.pid_source(dn)
        pid_path = pid_source.path
        if pid_source.observed:
            LOG.info('dnsmasq is observed through %s (%s)', pid_source.path,
                     pid_source.origin)
        else:
            LOG.warning('%s: a dnsmasq that dies is not seen, nor started '
                        'again', pid_source.origin)

    return service.Service(
        settings=settings_from_conf(conf),
        client=ironic.IronicClient.from_conf(conf),
        store=hostsdir.HostsDir(dn.dhcp_hostsdir, dn.staging_dir or None,
                                dn.dhcp_hostsfile or None),
        cmds=cmds,
        guard_factory=guard.Guard if dn.guard else None,
        watcher_factory=watcher.HostsDirWatcher if dn.watch_hostsdir else None,
        notifier=notify.Notifier(),
        reload_settings=reload_settings,
        pid_file=pid_path,
        child=child,
        control_factory=(functools.partial(serve_control,
                                           conf.control_socket,
                                           conf.control_socket_group)
                         if conf.control_socket else None))


def serve_control(path, group, ask):
    """Return a :class:`control.ControlServer` on ``path`` whose socket
    has group ``group`` (a name; empty: the daemon's own group).

    The socket is made 0660 with the daemon's group first, so it is never
    open to more than the daemon's group and the operators' group.  A group
    that does not exist leaves it so, with a warning.

    :raises control.ControlError: the socket cannot be made, or the group
        exists but cannot be given (the daemon is not a member).
    """
    server = control.ControlServer(path, ask)
    if not group:
        return server
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        LOG.warning('Control socket %s: group %s does not exist; the socket '
                    'keeps the group of the daemon (create the group, or set '
                    '[DEFAULT] control_socket_group)', path, group)
        return server
    try:
        os.chown(path, -1, gid)
    except OSError as exc:
        server.close()
        raise control.ControlError(
            'cannot give %s to group %s: %s (the daemon must be a member: '
            'SupplementaryGroups=%s)' % (path, group, exc.strerror or exc,
                                         group)) from exc
    return server


# mallopt(3) parameter number, from glibc's <malloc.h>.
_M_MMAP_THRESHOLD = -3


def tune_malloc(threshold=128 * 1024):
    """Have glibc give every block above ``threshold`` bytes its own
    mapping, unmapped when freed; return whether the setting took.

    By default glibc raises that threshold each time such a block is freed
    (up to 32 MiB).  After the first sync the daemon's large transient
    blocks -- dict tables of ~5 MiB at 100k MACs, built at every full sync,
    and the JSON pages -- would then come from the heap, whose pages stay
    resident after a free: measured, 96 MB instead of 86 MB peak with 100k
    ports.  Setting the threshold explicitly turns the adjustment off.
    """
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):   # not glibc
        return False


def _install_signals(svc):
    """SIGTERM and SIGINT ask ``svc`` (a Service or a WakeUp) to stop,
    SIGHUP to reload; the handlers take no lock (see pxefilterd.wakeup)."""
    svc.prepare_for_signals()

    def on_stop(signum, frame):
        svc.request_stop('received %s' % signal.Signals(signum).name,
                         from_signal=True)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP,
                  lambda signum, frame: svc.request_reload(from_signal=True))


def _run_noop(conf, tick=5.0):
    """``[pxe_filter] driver = noop``: touch nothing, but behave as the
    shipped unit expects: READY, a watchdog ping every ``tick`` seconds,
    SIGHUP re-reads the configuration, SIGTERM exits 0."""
    wake = wakeup.WakeUp()
    _install_signals(wake)
    notifier = notify.Notifier()
    status = 'noop driver: PXE filtering disabled'
    notifier.ready(status)
    LOG.warning('[pxe_filter] driver = noop: PXE filtering is disabled; '
                'the hostsdir and dnsmasq are not touched')
    while True:
        notifier.watchdog()
        wake.wait(tick)
        wake.clear()
        if wake.stop_reason is not None:
            notifier.stopping(status)
            LOG.info('pxefilterd exiting with status 0: %s',
                     wake.stop_reason)
            return service.EXIT_OK
        if not wake.take_reload():
            continue
        try:
            conf.mutate_config_files()
        except Exception as exc:
            LOG.error('SIGHUP: configuration not reloaded, keeping the '
                      'current one: %s', exc)
            continue
        LOG.info('SIGHUP: configuration reloaded; the noop driver has '
                 'nothing to apply (changing [pxe_filter] driver needs '
                 'a restart)')
        notifier.status(status)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    problems = load_config(CONF, argv)
    if problems:
        for line in problems:
            sys.stderr.write('pxefilterd: configuration error: %s\n' % line)
        return service.EXIT_CONFIG
    log.setup(CONF, 'pxefilterd')
    if not checks.files_read(CONF):
        LOG.warning('No configuration file was read (give one with '
                    '--config-file): every option has its default')
    for line in checks.unknown_options(CONF):
        LOG.warning('Configuration: %s', line)
    for line in checks.ironic_names(CONF):
        LOG.info('Configuration: %s', line)
    if not tune_malloc():
        LOG.debug('mallopt(M_MMAP_THRESHOLD) unavailable; memory use at '
                  '100k ports will be higher')
    if CONF.pxe_filter.driver == 'noop':
        return _run_noop(CONF)
    try:
        svc = build_service(CONF)
    except Exception as exc:
        # e.g. keystoneauth refusing the [ironic] auth options
        LOG.error('pxefilterd exiting with status %d: configuration error: '
                  '%s', service.EXIT_CONFIG, exc)
        return service.EXIT_CONFIG
    try:
        metrics_server = metrics.start_server(CONF, svc)
    except OSError as exc:
        LOG.error('pxefilterd exiting with status %d: cannot serve metrics '
                  'on %s:%s: %s', service.EXIT_FAILURE,
                  CONF.metrics.listen_address, CONF.metrics.listen_port,
                  exc.strerror or exc)
        return service.EXIT_FAILURE
    _install_signals(svc)
    LOG.info('pxefilterd starting: hostsdir %s, ironic %s',
             svc.store.path, CONF.ironic.endpoint_override or 'from catalog')
    try:
        code = svc.run()
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
    if svc.threads_alive():
        # A request to ironic still holds a feed thread (up to timeout x
        # retries).  Exit now, not when it returns; and without the
        # interpreter's shutdown, which a daemon thread writing a log line
        # at that moment can abort.
        logging.shutdown()
        os._exit(code)
    return code


if __name__ == '__main__':
    sys.exit(main())
