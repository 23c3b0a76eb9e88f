"""``pxefilterd-ctl``: look at and act on a pxefilterd hostsdir.

Subcommands::

    pxefilterd-ctl [--config-file F] status [--format text|json]
    pxefilterd-ctl [--config-file F] explain MAC [--format text|json]
    pxefilterd-ctl [--config-file F] sync --once [--dry-run]
    pxefilterd-ctl [--config-file F] check-config

``status``, ``explain`` and ``sync --dry-run`` only read: no lock, no
write, so they can run beside the daemon.  ``status`` and ``explain`` ask
the running daemon on its control socket when one answers.  ``sync --once``
writes, so it takes the hostsdir lock and refuses to run while a daemon
holds it.

Exit status: 0 success; 1 a runtime or environment problem (ironic
unreachable, hostsdir unusable, lock held); 2 usage error (argparse);
78 (EX_CONFIG) a configuration problem.
"""

import errno
import fcntl
import json
import logging
import os
import shlex
import shutil
import sys

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
from pxefilterd import policy
from pxefilterd import service
from pxefilterd import sudoers

EXIT_OK = service.EXIT_OK
EXIT_FAILURE = service.EXIT_FAILURE
EXIT_CONFIG = service.EXIT_CONFIG

#: Seconds allowed to the ironic request of ``check-config``.
CHECK_TIMEOUT = 5

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
    subparsers.add_parser(
        'check-config',
        help='Validate the configuration and the environment (hostsdir, '
             'commands, rootwrap filters, ironic).')


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

def scan(path):
    """Read the hostsdir at ``path`` without writing or locking anything.

    Returns ``(entries, foreign)``: ``entries`` maps each key (a MAC or
    :data:`pxefilterd.macs.WILDCARD`) with a file to its
    :class:`~pxefilterd.policy.Action`, or to None when the content is not
    one of the valid forms (or cannot be read); ``foreign`` is the sorted
    list of names that are not ours (other names, directories, symlinks).

    :raises OSError: the directory itself cannot be listed.
    """
    entries = {}
    foreign = []
    with os.scandir(path) as it:
        for entry in it:
            key = hostsdir.key_for_name(entry.name)
            if key is None or not entry.is_file(follow_symlinks=False):
                foreign.append(entry.name)
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC
                             | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    data = os.read(fd, 4096)
                finally:
                    os.close(fd)
            except OSError:
                entries[key] = None
                continue
            entries[key] = hostsdir.parse(key, data)
    return entries, sorted(foreign)


def current_view(store):
    """Return ``(view, foreign, base_info)``: what dnsmasq would read.

    ``view`` is ``{key: Action or None}``: the base hosts file's lines
    overridden by the per-MAC files (dnsmasq reads the hosts file first and
    the newest record wins), as :meth:`HostsDir.current` computes it for the
    daemon.  ``base_info`` is None without a base hosts file, else
    ``{'path', 'entries', 'invalid_lines'}``.  Reads only.

    :raises OSError: the hostsdir (or the base file) cannot be read.
    """
    files, foreign = scan(store.path)
    if not store.base_path:
        return files, foreign, None
    base, invalid = hostsdir.read_base(store.base_path)
    view = dict(base)
    view.update(files)
    return view, foreign, {'path': store.base_path, 'entries': len(base),
                           'invalid_lines': invalid}


def lock_holder(store):
    """Tell whether a process holds the hostsdir lock, without taking it.

    Tries a non-blocking *shared* flock on ``<staging>/lock`` (released at
    once).  Returns None when nobody holds it (or the lock file does not
    exist), else a dict ``{'pid': int or None, 'alive': bool or None}``
    with the pid written in the file by the holder.  ``alive`` False means
    that daemon is gone and its guard still holds the lock while it stops
    dnsmasq.
    """
    lock_path = os.path.join(store.staging, hostsdir.LOCK_FILE)
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
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
    """What can be seen of dnsmasq, from its pid file."""
    seen = dnsmasq.observe(conf.dnsmasq_pxe_filter.dnsmasq_pid_file or None)
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
            result = {'key': key, 'action': 'unknown', 'rule': 'unknown',
                      'text': 'neither the daemon nor ironic could be asked',
                      'option': None, 'ironic': {}, 'last_change': None}
        result['source'] = source
    explain_mod.add_disk(result, _store(conf))
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
    """Return ``[(key, old, new)]`` sorted: the files a sync would write.

    ``current`` is ``{key: Action or None}`` as returned by
    :func:`current_view`;
    ``old`` is 'absent', 'invalid', 'allow' or 'deny'; ``new`` an Action.
    """
    cached = [k for k in current if k != macs.WILDCARD]
    desired = policy.decide(snapshot, options, cached)
    changes = policy.diff(current, desired)
    return [(key, _state_name(current[key]) if key in current else 'absent',
             action) for key, action in sorted(changes.items())]


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
        desired = policy.decide(snapshot, _options(conf), store.cached())
        before = dict(store.current())
        changes = policy.diff(before, desired)
        written = store.apply(changes)
    except ironic.ApiError as exc:
        sys.stderr.write('pxefilterd-ctl: ironic: %s; nothing written\n'
                         % exc)
        return EXIT_FAILURE
    except (hostsdir.HostsDirError, OSError) as exc:
        sys.stderr.write('pxefilterd-ctl: %s\n' % exc)
        return EXIT_FAILURE
    finally:
        store.unlock()
    for key, action in sorted(changes.items()):
        old = _state_name(before[key]) if key in before else 'absent'
        out.write('%s: %s %s %s\n' % (key, old, _ARROW, action.value))
    allowed, denied = desired.counts()
    out.write('wrote %d file(s): %d allowed, %d denied, unknown MACs %s\n'
              % (written, allowed, denied, desired.unknown.value))
    return EXIT_OK


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
    changes = plan(snapshot, _options(conf), current)
    for key, old, new in changes:
        out.write('%s: %s %s %s\n' % (key, old, _ARROW, new.value))
    out.write('dry run: %d file(s) would be written, nothing was written\n'
              % len(changes))
    return EXIT_OK


# -- check-config -------------------------------------------------------------

def _rootwrap_config_path(root_helper):
    """Return the rootwrap config named by a pxefilterd-rootwrap helper."""
    for i, word in enumerate(root_helper):
        if os.path.basename(word).endswith('-rootwrap'):
            return root_helper[i + 1] if i + 1 < len(root_helper) else None
    return None


def _check_rootwrap(path, cmds):
    """Return ``(problems, warnings)`` about the rootwrap configuration.

    Problems: the file is unreadable or invalid, or a command would be
    refused (no filter matches, or its executable is not in exec_dirs).
    """
    # Imported here: only check-config needs it.
    import configparser

    from oslo_rootwrap import wrapper
    parser = configparser.RawConfigParser()
    try:
        with open(path) as f:
            parser.read_file(f)
        rw_conf = wrapper.RootwrapConfig(parser)
    except OSError as exc:
        return (['rootwrap config %s cannot be read (%s): the commands '
                 'cannot be checked against its filters'
                 % (path, exc.strerror)], [])
    except (configparser.Error, ValueError) as exc:
        return ['rootwrap config %s is invalid: %s' % (path, exc)], []
    filters = wrapper.load_filters(rw_conf.filters_path)
    problems, warnings = [], []
    try:
        # oslo.rootwrap always adds a filter allowing privsep-helper with
        # any arguments; it must not be found in exec_dirs.
        wrapper.match_filter(filters, ['privsep-helper'],
                             exec_dirs=rw_conf.exec_dirs)
    except (wrapper.NoFilterMatched, wrapper.FilterMatchNotExecutable):
        pass
    else:
        warnings.append('privsep-helper is in the rootwrap '
                        'exec_dirs (%s): rootwrap lets the pxefilterd user '
                        'run it as root with any arguments; remove its '
                        'directory from exec_dirs'
                        % ','.join(rw_conf.exec_dirs))
    for name, argv in cmds:
        try:
            wrapper.match_filter(filters, argv, exec_dirs=rw_conf.exec_dirs)
        except wrapper.FilterMatchNotExecutable:
            problems.append('%s: %s is allowed by the rootwrap filters but '
                            'not found in exec_dirs (%s)'
                            % (name, argv[0], ','.join(rw_conf.exec_dirs)))
        except wrapper.NoFilterMatched:
            problems.append('%s: "%s" is not allowed by any filter in %s'
                            % (name, ' '.join(argv),
                               ','.join(rw_conf.filters_path)))
    return problems, warnings


def _check_sudo(root_helper, cmds, static, hostsdir):
    """Problem lines for the commands sudo would not let the daemon's
    user (the hostsdir's owner) run; only asked as root, for a
    ``root_helper`` that starts with sudo."""
    if (os.geteuid() != 0 or not root_helper
            or os.path.basename(root_helper[0]) != 'sudo'):
        return []
    user = sudoers.daemon_user(hostsdir)
    if user is None:
        return []
    problems = []
    for label, argv in cmds:
        if label not in static:
            continue
        why = sudoers.refusal(user, root_helper[1:] + argv,
                              sudo=root_helper[0])
        if why:
            problems.append(
                '%s: %s may not run "%s" (%s); the sudoers rule must name '
                'the program where sudo finds it (admin guide section 4)'
                % (label, user, shlex.join(root_helper + argv), why))
    return problems


def _others_can(path, bits):
    try:
        return os.stat(path).st_mode & bits == bits
    except OSError:
        return True   # reported elsewhere


def environment_problems(conf, info=None):
    """Return ``(config_problems, env_problems, warnings)`` line lists.

    ``info``, if given, gets one line per command saying how it will run.

    Checks what the configuration refers to: the hostsdir can be read and
    traversed by other users (dnsmasq), each configured command's
    executables resolve, the rootwrap filters allow the commands, and ironic
    answers one ``inspection_nodes()`` call within :data:`CHECK_TIMEOUT`.
    Never raises for a failing check.
    """
    config, env, warnings = [], [], []
    info = [] if info is None else info
    dn = conf.dnsmasq_pxe_filter
    path = os.path.abspath(dn.dhcp_hostsdir)
    if conf.pxe_filter.driver == 'dnsmasq' and os.path.isdir(path):
        if not os.access(path, os.R_OK | os.X_OK):
            env.append('[dnsmasq_pxe_filter] dhcp_hostsdir = %s: not '
                       'readable by this user' % path)
        if not _others_can(path, 0o005):
            warnings.append('%s is not readable by other users: dnsmasq '
                            'reads it as its own user (use mode 0755, or '
                            'share a group with dnsmasq)' % path)
        parent = os.path.dirname(path)
        while parent != os.path.dirname(parent):
            if not _others_can(parent, 0o001):
                warnings.append('%s cannot be traversed by other users: '
                                'dnsmasq may not reach the hostsdir' % parent)
            parent = os.path.dirname(parent)
    try:
        root_helper = commands.split(conf.root_helper)
    except ValueError:
        root_helper = None   # reported by checks.check
    cmds = []
    static = set()      # commands without shell words: argv is final
    for name in ('dnsmasq_start_command', 'dnsmasq_stop_command',
                 'dnsmasq_reload_command'):
        label = '[dnsmasq_pxe_filter] %s' % name
        try:
            command = commands.Command.from_line(
                name, getattr(dn, name), timeout=CHECK_TIMEOUT)
        except ValueError:
            continue   # reported by checks.check
        if not command:
            continue
        argv = command.argv
        shown = None
        if command.line is not None and os.geteuid() == 0:
            # The daemon expands the words as its own unprivileged user; a
            # shell run here would run them as root.
            argv = commands.split(command.line)
            shown = ' '.join(([shlex.join(root_helper)] if root_helper
                              else []) + [command.line])
            warnings.append('%s has shell expansions, not run here: '
                            'check-config runs as root (run it as the '
                            "daemon's user to see them expanded); only its "
                            'static words are checked' % label)
        elif command.line is not None:
            # What the daemon will run: expanded now, as it will be then.
            try:
                argv = command.resolve()
            except commands.CommandError as exc:
                warnings.append('%s cannot be expanded now (%s); only its '
                                'static words are checked' % (label, exc))
                argv = commands.split(command.line)
        info.append('%s runs as: %s' % (label, shown or shlex.join(
            (root_helper or []) + argv)) + (
            ' (the words expanded by %s as the daemon\'s user at each run)'
            % commands.SHELL if command.line else ''))
        cmds.append((label, argv))
        if command.line is None:
            static.add(label)
    if root_helper is not None and cmds:
        rootwrap = [w for w in root_helper[1:]
                    if os.path.basename(w).endswith('-rootwrap')]
        if root_helper:
            # The command itself is resolved by the helper (rootwrap:
            # exec_dirs, checked below with its filters).
            exes = root_helper[:1] + rootwrap
        else:
            exes = [argv[0] for _, argv in cmds]
        if root_helper and not rootwrap:
            exes += [argv[0] for _, argv in cmds]
        for exe in dict.fromkeys(exes):
            if shutil.which(exe) is None:
                env.append('%s: executable not found in PATH' % exe)
        rw_path = _rootwrap_config_path(root_helper)
        if rw_path:
            rw_problems, rw_warnings = _check_rootwrap(rw_path, cmds)
            env.extend(rw_problems)
            warnings.extend(rw_warnings)
        env.extend(_check_sudo(root_helper, cmds, static, path))
    if conf.pxe_filter.driver == 'dnsmasq':
        problem = _check_ironic(conf)
        if problem is not None:
            kind, line = problem
            (config if kind == 'config' else env).append(line)
    return config, env, warnings


def _check_ironic(conf):
    conf.set_override('api_retries', 0, group='ironic')
    conf.set_override('timeout', min(conf.ironic.timeout or CHECK_TIMEOUT,
                                     CHECK_TIMEOUT), group='ironic')
    try:
        source = _source(conf)
    except ConfigError as exc:
        return 'config', '; '.join(exc.lines)
    except Exception as exc:
        return 'env', 'ironic: cannot connect: %s' % (exc,)
    try:
        source.inspection_nodes()
    except ironic.ApiError as exc:
        return 'env', 'ironic: not reachable: %s' % exc
    except Exception as exc:
        return 'env', 'ironic: request failed: %r' % (exc,)
    return None


def cmd_check_config(conf, out):
    """Print one line per problem; return 78, 1 or 0 (see module doc).

    May create the staging directory (as the daemon's checks do).
    """
    problems = checks.check(conf)
    files = checks.files_read(conf)
    info = ['configuration files read: %s' % ', '.join(files)] if files \
        else []
    config, env, warnings = environment_problems(conf, info)
    if not files:
        warnings.insert(0, 'no configuration file was read (none given with '
                        '--config-file, none found in the usual places: '
                        '~/.pxefilterd/, ~/, /etc/pxefilterd/, /etc/): every '
                        'option has its default')
    warnings[:0] = checks.unknown_options(conf)
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


_COMMANDS = {'status': cmd_status, 'explain': cmd_explain, 'sync': cmd_sync,
             'check-config': cmd_check_config}


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
