"""``pxefilterd-ctl``: look at and act on a pxefilterd hostsdir.

Subcommands::

    pxefilterd-ctl [--config-file F] status [--format text|json]
    pxefilterd-ctl [--config-file F] explain MAC [--format text|json]
    pxefilterd-ctl [--config-file F] sync --once [--dry-run]
    pxefilterd-ctl [--config-file F] check-config
    pxefilterd-ctl [--config-file F] health [--live] [--stale-after S]
    pxefilterd-ctl migrate-config IRONIC_CONF [--output FILE] [--group GROUP]

``status``, ``explain``, ``health`` and ``sync --dry-run`` only read: no
lock, no write, so they can run beside the daemon.  ``status``,
``explain`` and ``health`` ask the running daemon on its control socket
when one answers.  ``sync --once``
writes, so it takes the hostsdir lock and refuses to run while a daemon
holds it.  ``migrate-config`` writes a pxefilterd.conf from the settings
of ironic-pxe-filter in an ironic.conf and says what it could not carry.

Exit status: 0 success; 1 a runtime or environment problem (ironic
unreachable, hostsdir unusable, lock held); 2 usage error (argparse);
78 (EX_CONFIG) a configuration problem (for ``migrate-config``: the
ironic.conf cannot be migrated).  ``health`` exits 0 when the daemon
serves and 1 when it does not (see :func:`health_problems`), the
convention of container health checks.
"""

import errno
import fcntl
import grp
import json
import logging
import os
import pwd
import stat
import sys
import time

from keystoneauth1 import exceptions as ks_exc
from oslo_config import cfg

from pxefilterd import checks
from pxefilterd import commands
from pxefilterd import conf as pxf_conf
from pxefilterd import control
from pxefilterd import dnsmasq
from pxefilterd import explain as explain_mod
from pxefilterd import hostsdir
from pxefilterd import ironic
from pxefilterd import macs
from pxefilterd import migrate
from pxefilterd import policy
from pxefilterd import service
from pxefilterd import writer as writer_mod

EXIT_OK = service.EXIT_OK
EXIT_FAILURE = service.EXIT_FAILURE
EXIT_CONFIG = service.EXIT_CONFIG

#: Seconds allowed to the ironic request of ``check-config``.
CHECK_TIMEOUT = checks.CHECK_TIMEOUT

_ARROW = '\N{RIGHTWARDS ARROW}'


class ConfigError(Exception):
    """The configuration cannot be used; ``lines`` says why, one per item."""

    def __init__(self, lines):
        super().__init__('; '.join(lines))
        self.lines = list(lines)


# -- command line -------------------------------------------------------------

def _add_parsers(subparsers):
    status = subparsers.add_parser(
        'status', help='Show what the hostsdir says and who holds its lock.')
    status.add_argument('--format', choices=('text', 'json'), default='text',
                        help='Output format (default: text).')
    explain = subparsers.add_parser(
        'explain', help='Say why a MAC may or may not PXE boot: the '
        'decision, the ironic facts and option behind it, the file on disk, '
        'what dnsmasq answers, and when it last changed.')
    explain.add_argument('mac', help='A MAC address, an InfiniBand client '
                         'id (id:xx:xx:...), or "unknown" for the clients '
                         'ironic does not know.')
    explain.add_argument('--format', choices=('text', 'json'),
                         default='text', help='Output format (default: '
                         'text).')
    sync = subparsers.add_parser(
        'sync', help='Synchronise the hostsdir with ironic once.')
    sync.add_argument('--once', action='store_true', required=True,
                      help='Run one full sync and exit (required: the '
                           'continuous loop is the daemon\'s job).')
    sync.add_argument('--dry-run', action='store_true',
                      help='Print the changes (MAC, old -> new) and write '
                           'nothing; needs no lock.')
    health = subparsers.add_parser(
        'health', help='Exit 0 if the daemon serves the right list now, 1 '
        'if not (no answer on its control socket, first sync not done, '
        'failed closed, ironic not heard from for --stale-after seconds, '
        'dnsmasq not running or not observed): a container health check '
        'or a readiness probe.')
    health.add_argument('--live', action='store_true',
                        help='Only check that the daemon answers (a '
                             'liveness probe: not failing while ironic is '
                             'down or during the first sync).')
    health.add_argument('--stale-after', type=float, default=60.0,
                        metavar='SECONDS',
                        help='Unhealthy when no poll of ironic has '
                             'completed for this long (default: 60).')
    health.add_argument('--format', choices=('text', 'json'),
                        default='text', help='Output format (default: '
                        'text).')
    subparsers.add_parser(
        'check-config',
        help='Validate the configuration and the environment (hostsdir, '
             'commands, rootwrap filters, ironic).')
    migrate_cmd = subparsers.add_parser(
        'migrate-config',
        help='Write a pxefilterd.conf from the settings of '
             'ironic-pxe-filter in an ironic.conf, and say line by line '
             'what could not be carried and what is left to do.')
    migrate_cmd.add_argument('ironic_conf', metavar='IRONIC_CONF',
                         help="ironic-pxe-filter's ironic.conf.")
    migrate_cmd.add_argument('--output', '-o', default='-',
                         help='The pxefilterd.conf to create (mode 0640; '
                              'an existing file is never overwritten); '
                              'default "-": standard output, the report '
                              'then goes to standard error.')
    migrate_cmd.add_argument('--group', default='pxefilterd',
                         help='Run as root: the group the created file '
                              'is given, so that the daemon (User= of the '
                              'shipped unit, whose group this is) can '
                              'read it (default: pxefilterd).')


def new_conf():
    """Return a fresh ConfigOpts with every pxefilterd option registered."""
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    # Not oslo.log's "debug": the daemon's [DEFAULT] debug must not make
    # this command verbose.
    conf.register_cli_opt(cfg.BoolOpt(
        'verbose', short='v', default=False,
        help='Log ironic requests and other debugging messages to stderr.'))
    conf.register_cli_opt(cfg.SubCommandOpt(
        'command', title='commands', handler=_add_parsers,
        help='Run "pxefilterd-ctl COMMAND --help" for the options of each.'))
    return conf


def parse(conf, argv):
    """Parse ``argv`` and the configuration files into ``conf``.

    :raises ConfigError: a file is missing or unparsable, or an option has a
        value of the wrong type (one line per problem, naming the option).
    :raises SystemExit: usage error (argparse exits with status 2).
    """
    problems = checks.parse(
        conf, argv, prog='pxefilterd-ctl',
        description='Look at and act on a pxefilterd hostsdir: status, '
        'explain why a MAC may or may not PXE boot, sync once, check the '
        'configuration.')
    if problems:
        raise ConfigError(problems)


def _setup_logging(conf):
    # Not oslo.log's setup: that would write to the daemon's log_file (as
    # another user).  Library warnings (e.g. skipped ironic ports) go to
    # stderr.
    logging.basicConfig(
        stream=sys.stderr, format='pxefilterd-ctl: %(levelname)s %(message)s',
        level=logging.DEBUG if conf.verbose else logging.WARNING)


def _store(conf):
    dn = conf.dnsmasq_pxe_filter
    return hostsdir.HostsDir(dn.dhcp_hostsdir, dn.staging_dir or None,
                             dn.dhcp_hostsfile or None)


# -- reading the hostsdir (no lock, no write) -------------------------------

def current_view(store):
    """Return ``(view, foreign, base_info)``: what dnsmasq would read.

    ``view`` is :meth:`HostsDir.current` after :meth:`HostsDir.survey`
    (``{key: Action or None}``, the base hosts file's lines overridden by
    the per-MAC files); ``foreign`` the sorted names that are not ours
    (other names, directories, symlinks...); ``base_info`` None without a
    base hosts file, else ``{'path', 'entries', 'invalid_lines'}``.  Reads
    only, and never through a symlink.

    :raises OSError: the hostsdir (or the base file) cannot be read.
    """
    foreign, special = store.survey()
    base = None
    if store.base_path:
        invalid = store.load_base()
        base = {'path': store.base_path, 'entries': len(store.base),
                'invalid_lines': invalid}
    return dict(store.current()), sorted(foreign + special), base


_NO_LOCK = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR)


def lock_holder(store):
    """Tell whether a process holds the hostsdir lock, without taking it.

    Tries a non-blocking *shared* flock on ``<staging>/lock`` (released at
    once; a symlink is never followed).  Returns None when nobody holds it
    (or the lock file does not exist), else a dict
    ``{'pid': int or None, 'alive': bool or None}`` with the pid written
    in the file by the holder.  ``alive`` False means that daemon is gone
    and its guard still holds the lock while it stops dnsmasq.
    """
    # A symlink (as the staging directory or the lock file) is no lock:
    # the daemon refuses it too.
    try:
        staging = hostsdir.open_dir(store.staging)
    except OSError as exc:
        if exc.errno in _NO_LOCK:
            return None
        raise
    try:
        fd = os.open(hostsdir.LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC
                     | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=staging)
    except OSError as exc:
        if exc.errno in _NO_LOCK:
            return None
        raise
    finally:
        os.close(staging)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode('ascii', 'replace').strip()
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
    finally:
        os.close(fd)
    pid = int(text) if text.isdigit() else None
    alive = os.path.exists('/proc/%d' % pid) if pid else None
    return {'pid': pid, 'alive': alive}


def _describe_holder(holder):
    if holder['pid'] is None:
        return 'a process (pid unknown)'
    if holder['alive'] is False:
        return ('the guard of pid %d (that daemon has exited; its guard is '
                'stopping dnsmasq)' % holder['pid'])
    return 'pid %d' % holder['pid']


def status(conf):
    """Return the status as a JSON-serialisable dict.

    :raises OSError: the hostsdir cannot be listed.
    """
    store = _store(conf)
    entries, foreign, base = current_view(store)
    unknown = entries.pop(macs.WILDCARD, 'missing')
    invalid = sorted(k for k, a in entries.items() if a is None)
    allowed = sorted(k for k, a in entries.items() if a is policy.Action.ALLOW)
    denied = sum(1 for a in entries.values() if a is policy.Action.DENY)
    if unknown is None:
        unknown = 'invalid'
    elif unknown != 'missing':
        unknown = unknown.value
    return {
        'hostsdir': store.path,
        'allowed': allowed,
        'denied_count': denied,
        'unknown': unknown,
        'invalid': [hostsdir.file_name(k) for k in invalid],
        'foreign': foreign,
        'hostsfile': base,
        'lock': lock_holder(store),
        'driver': conf.pxe_filter.driver,
        'dnsmasq': _dnsmasq_status(conf),
        'daemon': _ask_daemon(conf, {'command': 'status'})[0],
    }


def _ask_daemon(conf, request):
    """Return ``(answer, None)`` from the running daemon, or ``(None,
    why not)``."""
    path = conf.control_socket
    if not path:
        return None, '[DEFAULT] control_socket is empty'
    try:
        answer = control.ask(path, request)
    except control.ControlError as exc:
        return None, str(exc)
    if not answer.get('ok'):
        return None, 'the daemon answered: %s' % answer.get('error')
    return answer, None


def _dnsmasq_status(conf):
    """What can be seen of dnsmasq, from its pid file (the configured one,
    or the one its commands name)."""
    if conf.dnsmasq_pxe_filter.dnsmasq_child_command:
        return {'state': 'child', 'pid': None,
                'detail': 'a child of the daemon (dnsmasq_child_command): '
                'only the daemon sees it'}
    source = dnsmasq.pid_source(conf.dnsmasq_pxe_filter)
    if not source.observed:
        return {'state': 'not observed', 'pid': None,
                'detail': source.origin}
    seen = dnsmasq.observe(source.path)
    return {'state': seen.state, 'pid': seen.pid, 'detail': seen.detail}


def _print_status(st, out):
    out.write('hostsdir: %s\n' % st['hostsdir'])
    holder = st['lock']
    if holder is None:
        out.write('daemon: none (the hostsdir lock is free)\n')
    else:
        out.write('daemon: lock held by %s\n' % _describe_holder(holder))
    if st['driver'] != 'dnsmasq':
        out.write('driver: %s (PXE filtering disabled)\n' % st['driver'])
    dm = st['dnsmasq']
    out.write('dnsmasq: %s (%s)\n' % (dm['state'], dm['detail']))
    live = st.get('daemon')
    if live is not None:
        out.write('daemon says: %s%d port(s), %d node(s) inspected, last '
                  'answer from ironic %s, dnsmasq %s\n' % (
                      'FAILED CLOSED, ' if live['failed_closed'] else '',
                      live['ports'], live['inspected_nodes'],
                      explain_mod.when(live['last_contact']),
                      live['dnsmasq']['state']))
    out.write('unknown MACs: %s\n' % st['unknown'])
    out.write('denied: %d\n' % st['denied_count'])
    out.write('allowed: %d\n' % len(st['allowed']))
    for mac in st['allowed']:
        out.write('  %s\n' % mac)
    if st['invalid']:
        out.write('invalid files (rewritten at the next sync): %s\n'
                  % ' '.join(st['invalid']))
    if st['foreign']:
        out.write('foreign entries (not pxefilterd\'s): %s\n'
                  % ' '.join(st['foreign']))
    base = st['hostsfile']
    if base is not None:
        out.write('base hosts file: %s: %d entries%s\n' % (
            base['path'], base['entries'],
            ', %d invalid line(s)' % base['invalid_lines']
            if base['invalid_lines'] else ''))


def cmd_status(conf, out):
    """Print the status; return 0, or 1 if the hostsdir cannot be read."""
    try:
        st = status(conf)
    except OSError as exc:
        sys.stderr.write('pxefilterd-ctl: cannot read the hostsdir %s: %s\n'
                         % (conf.dnsmasq_pxe_filter.dhcp_hostsdir,
                            exc.strerror or exc))
        return EXIT_FAILURE
    if conf.command.format == 'json':
        json.dump(st, out, indent=2, sort_keys=True)
        out.write('\n')
    else:
        _print_status(st, out)
    return EXIT_OK


# -- health -------------------------------------------------------------------

#: The dnsmasq states in which it serves and is seen to run.
_HEALTHY_DNSMASQ = ('running',)
#: Seconds the daemon has to answer a health check.
HEALTH_TIMEOUT = 3.0


def health_problems(answer, why_not, live=False, stale_after=60.0):
    """Return the lines saying why the daemon is not healthy (empty:
    healthy), from its status ``answer`` (or None, and ``why_not``).

    Unhealthy: no answer (not running, hung, no control socket); unless
    ``live``, also: the first sync is not done (``ready`` false), it failed
    closed, its last complete poll of ironic is older than ``stale_after``
    seconds, or dnsmasq is not seen running (stopped, starting, gone, not
    observed, unknown).
    """
    if answer is None:
        return ['the daemon does not answer: %s' % why_not]
    if live:
        return []
    problems = []
    if not answer.get('ready'):
        problems.append('not ready: the first sync with ironic is not done '
                        '(dnsmasq is not started before it)')
    if answer.get('failed_closed'):
        problems.append('failed closed: ironic has not answered for '
                        'max_stale_seconds (%s s); every MAC is denied'
                        % answer.get('max_stale_seconds'))
    age = answer.get('contact_age')
    if answer.get('ready') and (age is None or age > stale_after):
        problems.append('stale: no complete poll of ironic for %s'
                        % ('ever' if age is None else '%.0f s (more than '
                           '--stale-after %.0f s)' % (age, stale_after)))
    dm = answer.get('dnsmasq') or {}
    if dm.get('state') not in _HEALTHY_DNSMASQ:
        problems.append('dnsmasq is %s (%s)' % (dm.get('state'),
                                               dm.get('detail') or '-'))
    return problems


def cmd_health(conf, out):
    """Print ``healthy`` or why not; return 0 or 1."""
    args = conf.command
    path = conf.control_socket
    answer, why_not = None, '[DEFAULT] control_socket is empty'
    if path:
        try:
            answer = control.ask(path, {'command': 'status'},
                                 timeout=HEALTH_TIMEOUT)
        except control.ControlError as exc:
            why_not = str(exc)
        else:
            if not answer.get('ok'):
                answer, why_not = None, 'the daemon answered: %s' % (
                    answer.get('error'))
    problems = health_problems(answer, why_not, live=args.live,
                               stale_after=args.stale_after)
    if args.format == 'json':
        json.dump({'healthy': not problems, 'problems': problems,
                   'daemon': answer}, out, indent=2, sort_keys=True)
        out.write('\n')
    elif problems:
        for line in problems:
            out.write('unhealthy: %s\n' % line)
    else:
        out.write('healthy: %s\n' % ('the daemon answers' if args.live else
                                      'serving, dnsmasq %s' % (
                                          answer['dnsmasq']['detail'])))
    return EXIT_FAILURE if problems else EXIT_OK


# -- explain ------------------------------------------------------------------

def cmd_explain(conf, out):
    """Explain one MAC; return 0, or 1 if neither the daemon nor ironic
    could be asked (what is on disk is still shown)."""
    raw = conf.command.mac
    key = (macs.WILDCARD if raw in ('unknown', macs.WILDCARD)
           else macs.normalize_key(raw))
    if key is None:
        sys.stderr.write('pxefilterd-ctl: %r is not a MAC address (or a '
                         'client id: id:xx:xx:...)\n' % raw)
        return EXIT_FAILURE
    code = EXIT_OK
    result, why_not = _ask_daemon(conf, {'command': 'explain', 'key': key})
    if result is not None:
        result.pop('ok', None)
        result['source'] = 'the running daemon (pid %s)' % result.get('pid')
        if result.get('last_change') is None:
            result['last_change_note'] = 'not since the daemon started'
    else:
        source = 'ironic, asked now (no daemon answered: %s)' % why_not
        try:
            result = explain_mod.from_ironic(_source(conf), key,
                                             _options(conf))
        except ironic.ApiError as exc:
            code = EXIT_FAILURE
            source = 'nothing: no daemon answered (%s) and ironic cannot be ' \
                'asked (%s)' % (why_not, exc)
            result = explain_mod.answer(key, None, {})
        result['source'] = source
    # (the files read are named after the key normalised here, never
    # after anything in the answer)
    explain_mod.add_disk(result, _store(conf), key)
    if conf.command.format == 'json':
        json.dump(result, out, indent=2, sort_keys=True)
        out.write('\n')
    else:
        explain_mod.render(result, out)
    return code


# -- sync ---------------------------------------------------------------------

def _options(conf):
    try:
        return pxf_conf.policy_options(conf)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from exc


def _state_name(action):
    if action is None:
        return 'invalid'
    return action.value


def plan(snapshot, options, current):
    """Return ``(desired, changes)``: the decision and the files a sync
    would write.

    ``current`` is ``{key: Action or None}`` as returned by
    :func:`current_view`; ``changes`` is ``[(key, old, new)]`` sorted,
    ``old`` being 'absent', 'invalid', 'allow' or 'deny' and ``new`` an
    Action.
    """
    cached = [k for k in current if k != macs.WILDCARD]
    desired = policy.decide(snapshot, options, cached)
    changes = policy.diff(current, desired)
    return desired, [
        (key, _state_name(current[key]) if key in current else 'absent',
         action) for key, action in sorted(changes.items())]


def _print_changes(changes, out):
    for key, old, new in changes:
        out.write('%s: %s %s %s\n' % (key, old, _ARROW, new.value))


def _source(conf):
    """Return an IronicClient; raise ConfigError for bad auth options."""
    try:
        return ironic.IronicClient.from_conf(conf)
    except ks_exc.AuthPluginException as exc:
        raise ConfigError(['[ironic] authentication options: %s'
                           % exc]) from exc
    except ValueError as exc:
        raise ConfigError([str(exc)]) from exc


def cmd_sync(conf, out):
    """Run one sync (or its dry run); return the exit status.

    Never writes with ``--dry-run``; otherwise writes only with the lock
    held, and nothing at all if ironic fails.  Returns 1 when the lock is
    held, ironic fails or the hostsdir cannot be written.

    :raises ConfigError: contradictory policy or bad ``[ironic]`` auth.
    """
    _options(conf)          # a contradictory policy is refused up front
    store = _store(conf)
    if conf.command.dry_run:
        return _dry_run(conf, store, out)
    problem = _not_ours(store)
    if problem:
        sys.stderr.write('pxefilterd-ctl: refusing to write: %s\n' % problem)
        return EXIT_FAILURE
    try:
        store.lock(wait=0)
    except hostsdir.HostsDirLocked:
        holder = lock_holder(store)
        who = _describe_holder(holder) if holder else 'another process'
        sys.stderr.write(
            'pxefilterd-ctl: %s holds the lock on %s: a running daemon '
            'already keeps it in sync.  Stop it first, or use --dry-run.\n'
            % (who, store.path))
        return EXIT_FAILURE
    except hostsdir.HostsDirError as exc:
        sys.stderr.write('pxefilterd-ctl: %s\n' % exc)
        return EXIT_FAILURE
    try:
        foreign = store.load()
        for name in foreign:
            sys.stderr.write('pxefilterd-ctl: foreign entry %s left in '
                             'place\n' % name)
        if store.base_path:
            # Changes go to per-MAC files (dnsmasq sees them at once); the
            # base file is the daemon's to rewrite, with a reload.
            store.load_base()
        snapshot = _source(conf).snapshot()
        desired, changes = plan(snapshot, _options(conf), store.current())
        written = _converge(conf, store, desired, snapshot.ports)
    except ironic.ApiError as exc:
        sys.stderr.write('pxefilterd-ctl: ironic: %s; nothing written\n'
                         % exc)
        return EXIT_FAILURE
    except (hostsdir.HostsDirError, OSError) as exc:
        sys.stderr.write('pxefilterd-ctl: %s\n' % exc)
        return EXIT_FAILURE
    finally:
        store.unlock()
    _print_changes(changes, out)
    allowed, denied = desired.counts()
    out.write('wrote %d file(s): %d allowed, %d denied, unknown MACs %s\n'
              % (written, allowed, denied, desired.unknown.value))
    return EXIT_OK


def _converge(conf, store, desired, known, clock=time.monotonic,
              sleep=time.sleep):
    """Write ``desired`` with the daemon's writer; return the count.

    dnsmasq may be reading the hostsdir (nothing here can tell), so the
    writes are paced as the daemon paces them while dnsmasq runs
    (``max_burst`` at once, then ``burst_rate`` per second).  No reload is
    run: changes go to the per-MAC files, never into the base hosts file.
    """
    writer = writer_mod.Writer(store, commands.Command('reload'),
                               lambda: conf.dnsmasq_pxe_filter, clock=clock,
                               serving=lambda: True)
    written = writer.converge(desired, known)
    while writer.pending:
        sleep(writer.next_due())
        written += writer.converge(desired, known)
    return written


def _dry_run(conf, store, out):
    try:
        current, _foreign, _base = current_view(store)
    except OSError as exc:
        sys.stderr.write('pxefilterd-ctl: cannot read the hostsdir %s: %s\n'
                         % (store.path, exc.strerror or exc))
        return EXIT_FAILURE
    try:
        snapshot = _source(conf).snapshot()
    except ironic.ApiError as exc:
        sys.stderr.write('pxefilterd-ctl: ironic: %s\n' % exc)
        return EXIT_FAILURE
    _desired, changes = plan(snapshot, _options(conf), current)
    _print_changes(changes, out)
    out.write('dry run: %d file(s) would be written, nothing was written\n'
              % len(changes))
    return EXIT_OK


def _not_ours(store):
    """Why the hostsdir or its staging directory must not be written by
    this process (a symlink, or another user's), or None."""
    for path in (store.path, store.staging):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue        # (the lock says: missing, or creates it)
        if stat.S_ISLNK(st.st_mode):
            return '%s is a symlink' % path
        if st.st_uid != os.geteuid():
            return ('%s belongs to uid %d, not to this user (uid %d): run '
                    "pxefilterd-ctl as the daemon's user"
                    % (path, st.st_uid, os.geteuid()))
    return None


# -- running as root: become the daemon's user --------------------------------

class UserError(Exception):
    """Which user to run as cannot be told safely."""


def path_owner(path):
    """Return ``(uid, gid)`` of the first entry on the way to ``path``,
    from ``/`` down, that belongs to a user other than root; ``(0, 0)``
    when root owns the whole way (or as far as it exists).

    That user can rename or replace everything below it, links included:
    whatever is done at ``path`` may be done as that user and no other.
    The entries are looked at with ``lstat`` (a link is judged by its own
    owner, then followed only as root's).
    """
    current = os.sep
    for part in os.path.abspath(path).split(os.sep)[1:]:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except OSError:
            break
        if st.st_uid != 0:
            return st.st_uid, st.st_gid
    return 0, 0


def daemon_paths(conf):
    """The paths of the daemon's own directories and files that
    pxefilterd-ctl reads or writes."""
    store = _store(conf)
    return [p for p in (store.path, store.staging, store.base_path,
                        conf.control_socket) if p]


def become_daemon_user(conf):
    """Run as the user the daemon's directories belong to, when run as
    root; return that uid (None: nothing changed).

    The user is :func:`path_owner` of every path of :func:`daemon_paths`:
    none but root (the daemon runs as root) changes nothing.  Once dropped
    (groups, gid, then uid; for good), a link planted there gives nothing
    that user could not do anyway.

    :raises UserError: those paths belong to different users.
    """
    if os.geteuid() != 0:
        return None
    owners = {}
    for path in daemon_paths(conf):
        uid, gid = path_owner(path)
        if uid:
            owners.setdefault(uid, (gid, []))[1].append(path)
    if not owners:
        return None
    if len(owners) > 1:
        raise UserError(
            "the daemon's paths are owned by different users (%s): run "
            'pxefilterd-ctl as the right one' % '; '.join(
                'uid %d: %s' % (uid, ', '.join(paths))
                for uid, (_gid, paths) in sorted(owners.items())))
    (uid, (gid, _paths)), = owners.items()
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        os.setgroups([])
    else:
        gid = entry.pw_gid
        os.initgroups(entry.pw_name, gid)
    os.setgid(gid)
    os.setuid(uid)
    return uid


# -- check-config -------------------------------------------------------------

def cmd_check_config(conf, out):
    """Print one line per problem; return 78, 1 or 0 (see module doc).

    May create the staging directory (as the daemon's checks do).
    """
    problems = checks.check(conf)
    files = checks.files_read(conf)
    info = ['configuration files read: %s' % ', '.join(files)] if files \
        else []
    config, env, warnings = checks.environment_problems(conf, info)
    if not files:
        warnings.insert(0, 'no configuration file was read (none given with '
                        '--config-file, and no %s): every option has its '
                        'default' % pxf_conf.DEFAULT_CONFIG_FILE)
    warnings[:0] = checks.unknown_options(conf)
    info.extend(checks.ironic_names(conf))
    for line in info:
        out.write('info: %s\n' % line)
    for line in problems + config:
        out.write('config: %s\n' % line)
    for line in env:
        out.write('environment: %s\n' % line)
    for line in warnings:
        out.write('warning: %s\n' % line)
    if problems or config:
        return EXIT_CONFIG
    if env:
        return EXIT_FAILURE
    out.write('configuration OK\n')
    return EXIT_OK


# -- migrate-config -----------------------------------------------------------

def cmd_migrate_config(conf, out):
    """Write the migration of ``conf.command.ironic_conf``; return 0, 78
    when the file cannot be migrated (one line on stderr says why), or 1
    when the output cannot be created.

    The configuration goes to ``--output`` (created 0640, never over an
    existing file) or to ``out``; the report, one ``carried:``, ``not
    carried:`` or ``to do:`` line per setting, to ``out`` when the
    configuration does not, else to stderr.
    """
    args = conf.command
    try:
        result = migrate.migrate(migrate.read_sections(args.ironic_conf),
                                 args.ironic_conf)
    except migrate.MigrationError as exc:
        sys.stderr.write('pxefilterd-ctl: cannot migrate: %s\n' % exc)
        return EXIT_CONFIG
    if args.output == '-':
        out.write(result.text)
        report = sys.stderr
    else:
        try:
            fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            sys.stderr.write('pxefilterd-ctl: cannot create %s: %s%s\n' % (
                args.output, exc.strerror or exc,
                ' (never overwritten: choose another name, or remove it)'
                if exc.errno == errno.EEXIST else ''))
            return EXIT_FAILURE
        with os.fdopen(fd, 'w') as f:
            owner = _give_to_group(f.fileno(), args.group)
            f.write(result.text)
        report = out
        if owner:
            report.write('wrote %s (%s, mode 0640)\n' % (args.output, owner))
        else:
            report.write('wrote %s\n' % args.output)
            report.write('to do: %s is 0640 and yours: make it readable by '
                         "the daemon's user (chgrp GROUP %s, GROUP the "
                         "daemon's group)\n" % (args.output, args.output))
    for kind, line in result.report:
        report.write('%s: %s\n' % (kind, line))
    return EXIT_OK


def _give_to_group(fd, group):
    """Make the open file *fd* root:*group* when run as root; return
    ``"root:GROUP"``, or None when not root or no such group.

    The daemon runs as its own user and reads pxefilterd.conf through its
    group (0640, as the admin guide installs it): a file left root:root
    would be read by ``check-config`` (run as root) and refused by the
    daemon.
    """
    if os.geteuid() != 0:
        return None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return None
    os.fchown(fd, 0, gid)
    return 'root:%s' % group


_COMMANDS = {'status': cmd_status, 'explain': cmd_explain, 'sync': cmd_sync,
             'check-config': cmd_check_config, 'health': cmd_health,
             'migrate-config': cmd_migrate_config}


def _command_name(conf):
    try:
        return conf.command.name
    except (cfg.Error, AttributeError):
        return None


def _report_config_error(conf, exc, out):
    # check-config reports on stdout (its output is the list of problems);
    # the other commands fail, on stderr.
    if _command_name(conf) == 'check-config':
        for line in exc.lines:
            out.write('config: %s\n' % line)
    else:
        for line in exc.lines:
            sys.stderr.write('pxefilterd-ctl: configuration error: %s\n'
                             % line)
    return EXIT_CONFIG


def main(argv=None, out=None):
    """Run ``pxefilterd-ctl``; return the exit status (see module doc).

    :raises SystemExit: usage errors (status 2) and ``--help`` (status 0),
        from argparse.
    """
    argv = sys.argv[1:] if argv is None else argv
    out = sys.stdout if out is None else out
    conf = new_conf()
    try:
        parse(conf, argv)
    except ConfigError as exc:
        return _report_config_error(conf, exc, out)
    _setup_logging(conf)
    if conf.command.name == 'migrate-config':
        # Reads a file the operator names and writes one they name: as
        # whoever runs it, never as the daemon's user.
        return cmd_migrate_config(conf, out)
    try:
        become_daemon_user(conf)
    except UserError as exc:
        sys.stderr.write('pxefilterd-ctl: %s\n' % exc)
        return EXIT_FAILURE
    try:
        return _COMMANDS[conf.command.name](conf, out)
    except ConfigError as exc:
        return _report_config_error(conf, exc, out)
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            return EXIT_FAILURE
        raise


if __name__ == '__main__':
    sys.exit(main())
