"""Configuration checks: every problem as one line naming option and value.

Used by the daemon before it touches anything (a bad configuration never
starts or stops dnsmasq) and by ``pxefilterd-ctl check-config``, which also
checks the environment the configuration refers to
(:func:`environment_problems`).
"""

import configparser
import difflib
import glob
from importlib import metadata
import os
import pwd
import shlex
import shutil

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from pxefilterd import child
from pxefilterd import commands
from pxefilterd import conf as pxf_conf
from pxefilterd.conf import opts as all_opts
from pxefilterd import dnsmasq
from pxefilterd import hostsdir
from pxefilterd import ironic
from pxefilterd import migrate
from pxefilterd import pidsource
from pxefilterd import sudoers

#: Seconds allowed to the ironic request of the environment checks.
CHECK_TIMEOUT = 5


def parse(conf, argv, prog=None, description=None, epilog=None):
    """Parse ``argv`` and the config files into ``conf``; return problems.

    Never raises for bad configuration: a missing or unparsable file, or an
    option value of the wrong type, becomes one line naming it.
    ``description`` and ``epilog`` are for ``--help``.
    """
    try:
        conf(argv, project='pxefilterd', prog=prog, description=description,
             epilog=epilog, **pxf_conf.config_sources())
    except cfg.ConfigFilesNotFoundError as exc:
        return ['configuration file not found: %s'
                % ', '.join(exc.config_files)]
    except cfg.ConfigFileParseError as exc:
        return ['configuration file %s cannot be parsed: %s'
                % (exc.config_file, exc.msg)]
    except (cfg.Error, ValueError) as exc:
        return ['configuration error: %s' % exc]
    return read_all(conf, all_opts.list_opts())


def _opt_name(group, name):
    return '[%s] %s' % (group or 'DEFAULT', name)


def read_all(conf, opts_by_group):
    """Read every option once; return a problem line per unreadable value.

    oslo.config converts values lazily, so a wrong type in the file only
    shows up when the option is read.
    """
    problems = []
    for group, group_opts in opts_by_group:
        for opt in group_opts:
            try:
                if group == 'DEFAULT':
                    getattr(conf, opt.dest)
                else:
                    getattr(getattr(conf, group), opt.dest)
            except cfg.ConfigFileValueError as exc:
                detail = str(exc)
                if ' is not valid: ' in detail:
                    detail = detail.split(' is not valid: ', 1)[1]
                problems.append('%s: invalid value: %s'
                                % (_opt_name(group, opt.dest), detail))
            except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
                pass   # auth plugin options not loaded for this auth_type
            except (cfg.Error, ValueError) as exc:
                problems.append('%s: %s' % (_opt_name(group, opt.dest), exc))
    return problems


def check(conf):
    """Return a list of problem lines for ``conf`` (empty: all good).

    Checks what can be checked without side effects beyond creating the
    staging directory: option combinations, command lines, the hostsdir.
    """
    problems = []
    pf = conf.pxe_filter
    dn = conf.dnsmasq_pxe_filter
    if pf.auto_discovery and pf.deny_unknown_macs:
        problems.append('[pxe_filter] auto_discovery = True and '
                        '[pxe_filter] deny_unknown_macs = True cannot be '
                        'combined: one allows unknown MACs, the other denies '
                        'them')
    if not pf.supported_inspect_interfaces:
        problems.append('[pxe_filter] supported_inspect_interfaces is empty: '
                        'no node could ever be allowed to boot')
    for group, name in (('DEFAULT', 'root_helper'),
                        ('dnsmasq_pxe_filter', 'dnsmasq_start_command'),
                        ('dnsmasq_pxe_filter', 'dnsmasq_stop_command'),
                        ('dnsmasq_pxe_filter', 'dnsmasq_reload_command')):
        value = (conf.root_helper if group == 'DEFAULT'
                 else getattr(dn, name))
        try:
            commands.split(value)
        except ValueError as exc:
            problems.append('%s = %s: cannot be parsed: %s'
                            % (_opt_name(group, name), value, exc))
    problems.extend(child.problems(dn))
    if pf.driver != 'dnsmasq':
        return problems
    if (dn.purge_dhcp_hostsdir and not dn.dnsmasq_start_command
            and not dn.dnsmasq_reload_command
            and not dn.dnsmasq_child_command):
        problems.append(
            '[dnsmasq_pxe_filter] purge_dhcp_hostsdir = True with an empty '
            'dnsmasq_start_command: a dnsmasq started elsewhere would keep '
            'every purged record; set dnsmasq_reload_command (or '
            'dnsmasq_start_command), or purge_dhcp_hostsdir = False')
    store = hostsdir.HostsDir(dn.dhcp_hostsdir, dn.staging_dir or None,
                              dn.dhcp_hostsfile or None)
    try:
        store.check()
    except hostsdir.HostsDirError as exc:
        problems.append('[dnsmasq_pxe_filter] dhcp_hostsdir: %s'
                        % exc)
    timeout = conf.ironic.timeout
    if timeout is None or not 0 < timeout <= 3600:
        problems.append('[ironic] timeout = %s: must be a number of seconds '
                        'between 0 and 3600 (every request needs a timeout)'
                        % timeout)
    needed, why = ironic.microversion_for(
        [f for f in ironic.SCOPE_FIELDS if getattr(pf, f)])
    for name in ('max_version', 'version'):
        value = getattr(conf.ironic, name)
        wanted = needed[:len(_version(value))]
        if value and _version(value) < wanted:
            problems.append('[ironic] %s = %s: below API %s, which '
                            'pxefilterd needs (%s)' % (
                                name, value,
                                '.'.join(str(p) for p in wanted), why))
    if not conf.ironic.endpoint_override and conf.ironic.auth_type in (
            None, 'none', 'noauth'):
        problems.append('[ironic] endpoint_override is required without '
                        'keystone authentication (auth_type = %s)'
                        % conf.ironic.auth_type)
    try:
        helper_argv = commands.split(conf.root_helper)
    except ValueError:
        helper_argv = []
    if (conf.rootwrap_config in helper_argv
            and (dn.dnsmasq_start_command or dn.dnsmasq_stop_command)
            and not dn.dnsmasq_child_command
            and not os.path.exists(conf.rootwrap_config)):
        problems.append('[DEFAULT] rootwrap_config = %s: file not found (the '
                        'root_helper needs it)' % conf.rootwrap_config)
    return problems


def _version(text):
    try:
        return tuple(int(p) for p in str(text).split('.'))
    except ValueError:
        return (0,)


def files_read(conf):
    """Return the configuration files ``conf`` was parsed from, in order
    (``--config-file`` or the default file, then ``--config-dir``)."""
    files = list(conf.config_file or ())
    for directory in conf.config_dir or ():
        files.extend(sorted(glob.glob(os.path.join(directory, '*.conf'))))
    return files


def _entry_point_opts(namespace):
    """The (group, options) list of the oslo.config.opts entry point
    ``namespace`` -- what oslo-config-generator and its validator load."""
    (point,) = metadata.entry_points(group='oslo.config.opts',
                                     name=namespace)
    return point.load()()


def _known_options(conf):
    """Return ``(known, deprecated)``, each ``{group: set of names}``: the
    options oslo-config-validator would accept in a file (pxefilterd's,
    oslo.log's and those of the configured ``[ironic] auth_type`` plugin)
    and their deprecated names.

    Built from the options' public attributes (name, dest, deprecated_opts)
    by the validator's rules, not from its private functions.
    """
    listings = [all_opts.list_opts(), _entry_point_opts('oslo.log')]
    try:
        listings.append([('ironic', ks_loading.get_auth_plugin_conf_options(
            conf.ironic.auth_type))])
    except Exception:   # no or unknown auth_type: reported elsewhere
        pass
    known, deprecated = {}, {}
    for listing in listings:
        for group, opts in listing:
            group = getattr(group, 'name', group) or 'DEFAULT'
            names = known.setdefault(group, set())
            for opt in opts:
                names.update((opt.name, opt.dest))
                for old in opt.deprecated_opts:
                    # a name with "-" cannot appear in a file
                    if old.name and '-' in old.name:
                        continue
                    deprecated.setdefault(old.group or group, set()).add(
                        old.name or opt.name)
    return known, deprecated


def unknown_options(conf):
    """Return one line per option or section in the files read that
    pxefilterd does not know (oslo.config would silently ignore it).

    Applies the rules of oslo.config's validator (``oslo-config-validator``)
    to the files as oslo.config's parser reads them.
    """
    known, deprecated = _known_options(conf)
    lines = []
    for path, sections in _parsed_files(conf):
        for section, options in sections.items():
            if section == 'auto_discovery':
                # ironic's section: its options are ironic names (below).
                lines.extend(
                    '%s: [%s] %s is not an option of ironic\'s '
                    '[auto_discovery] and is ignored' % (path, section, o)
                    for o in options if (section, o) not in _IRONIC_NAMES)
                continue
            if section not in known:
                lines.append('%s: section [%s] is not a pxefilterd section; '
                             'its %d option(s) are ignored'
                             % (path, section, len(options)))
                continue
            for option in options:
                if (option in known[section]
                        or (section, option) in _IRONIC_NAMES):
                    continue
                if option in deprecated.get(section, ()):
                    lines.append('%s: [%s] %s is deprecated; see the '
                                 'sample configuration for its new name'
                                 % (path, section, option))
                    continue
                close = difflib.get_close_matches(
                    option, sorted(known[section]), n=1)
                lines.append('%s: [%s] %s is not a pxefilterd option and is '
                             'ignored%s' % (path, section, option,
                                            ' (did you mean %s?)' % close[0]
                                            if close else ''))
    return lines


_IRONIC_NAMES = set(migrate.ALIASES) | set(migrate.IRONIC_ONLY)


def _parsed_files(conf):
    """Return ``[(path, {section: {option: [values]}})]`` for each file
    read, as oslo.config's parser reads it; a file it cannot read or parse
    is left out (the configuration's own parse reports it)."""
    parsed = []
    for path in files_read(conf):
        sections = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except (OSError, cfg.ParseError):
            continue
        parsed.append((path, sections))
    return parsed


def ironic_names(conf):
    """Return one line per option in the files read that is one of
    ironic-pxe-filter's names for a pxefilterd option (read as that option,
    or ignored where oslo.config reads the other name) or an option of
    ironic's own in a section shared with the filter (``[auto_discovery]
    driver``: not used).

    Such options come from an ironic.conf's filter sections, copied as
    they are; :func:`unknown_options` does not list them.
    """
    parsed = _parsed_files(conf)
    lines = []
    for index, (path, sections) in enumerate(parsed):
        for section, options in sections.items():
            for option in options:
                key = (section, option)
                if key in migrate.ALIASES:
                    winner = _source_of(parsed, key, migrate.ALIASES[key])
                    lines.append('%s: [%s] %s is ironic\'s name for [%s] %s '
                                 'and is %s' % (
                                     (path,) + key + migrate.ALIASES[key]
                                     + ('read as it' if winner == (index, key)
                                        else 'ignored: [%s] %s in %s is read '
                                        'instead' % (winner[1] + (
                                            parsed[winner[0]][0],)),)))
                elif key in migrate.IRONIC_ONLY:
                    lines.append('%s: [%s] %s is ironic\'s (%s), not the PXE '
                                 'filter\'s, and is not used'
                                 % ((path,) + key
                                    + (migrate.IRONIC_ONLY[key],)))
    return lines


def _source_of(parsed, alias, own):
    """Return ``(file index, (section, option))`` of the value oslo.config
    reads for an option with one deprecated name: the last file that sets
    either name, and in a file the option's own name first."""
    for index in range(len(parsed) - 1, -1, -1):
        sections = parsed[index][1]
        for section, option in (own, alias):
            if option in sections.get(section, {}):
                return index, (section, option)
    return None


# -- the environment (pxefilterd-ctl check-config) ---------------------

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
        root_helper = None   # reported by check()
    cmds = []
    static = set()      # commands without shell words: argv is final
    for name in ('dnsmasq_start_command', 'dnsmasq_stop_command',
                 'dnsmasq_reload_command'):
        label = '[dnsmasq_pxe_filter] %s' % name
        try:
            command = commands.Command.from_line(
                name, getattr(dn, name), timeout=CHECK_TIMEOUT)
        except ValueError:
            continue   # reported by check()
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
    if conf.pxe_filter.driver == 'dnsmasq' and dn.dnsmasq_child_command:
        _check_child(dn, info, env, warnings)
    elif conf.pxe_filter.driver == 'dnsmasq':
        config.extend(_check_dnsmasq_words(dn.dnsmasq_start_command))
        source = dnsmasq.pid_source(dn)
        if source.observed:
            info.append('dnsmasq is observed through %s (%s)'
                        % (source.path, source.origin))
        else:
            warnings.append('%s: a dnsmasq that dies is not seen, nor '
                            'started again' % source.origin)
    if conf.pxe_filter.driver == 'dnsmasq':
        problem = _check_ironic(conf)
        if problem is not None:
            kind, line = problem
            (config if kind == 'config' else env).append(line)
    return config, env, warnings


def _check_child(dn, info, env, warnings):
    """Lines about the child dnsmasq (``dnsmasq_child_command``): how it
    runs, whether its program exists, whether it may bind port 67."""
    try:
        argv = child.argv_from_line(dn.dnsmasq_child_command)
    except ValueError:
        return      # reported by check()
    info.append('%s runs as: %s (a child of pxefilterd, watched directly)'
                % (child.OPTION, shlex.join(argv)))
    if shutil.which(argv[0]) is None:
        env.append('%s: executable not found in PATH' % argv[0])
    if os.geteuid() != 0:
        warnings.append('%s: pxefilterd does not run as root, so dnsmasq, '
                        'its child, needs the capabilities to serve DHCP '
                        '(CAP_NET_BIND_SERVICE, CAP_NET_RAW, CAP_NET_ADMIN) '
                        'from elsewhere' % child.OPTION)
    if not dn.guard:
        warnings.append('[dnsmasq_pxe_filter] guard = False: a child '
                        'dnsmasq outlives a pxefilterd that is killed '
                        '(unless it is the first process of a container)')


def _check_dnsmasq_words(line):
    """Problem lines for the words of a start command that dnsmasq will
    refuse (it exits at its first start, and says only "junk found in
    command line")."""
    try:
        argv = pidsource.dnsmasq_argv(commands.split(line or ''))
    except ValueError:
        return []       # reported by checks.check
    return ['[dnsmasq_pxe_filter] dnsmasq_start_command: %s' % problem
            for problem in pidsource.check_dnsmasq_argv(argv or [])]


def _user_name():
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:        # a uid with no name (containers)
        return None


def _check_sudo(root_helper, cmds, static, hostsdir):
    """Problem lines for the commands sudo would not let the daemon's
    user (the hostsdir's owner) run, for a ``root_helper`` that starts with
    sudo; asked as root, or as that user itself."""
    if not root_helper or os.path.basename(root_helper[0]) != 'sudo':
        return []
    user = sudoers.daemon_user(hostsdir)
    if user is None or (os.geteuid() != 0 and _user_name() != user):
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


def _check_ironic(conf):
    conf.set_override('api_retries', 0, group='ironic')
    conf.set_override('timeout', min(conf.ironic.timeout or CHECK_TIMEOUT,
                                     CHECK_TIMEOUT), group='ironic')
    try:
        source = ironic.IronicClient.from_conf(conf)
    except ks_exc.AuthPluginException as exc:
        return 'config', '[ironic] authentication options: %s' % exc
    except ValueError as exc:
        return 'config', str(exc)
    except Exception as exc:
        return 'env', 'ironic: cannot connect: %s' % (exc,)
    try:
        source.inspection_nodes()
    except ironic.ApiError as exc:
        return 'env', 'ironic: not reachable: %s' % exc
    except Exception as exc:
        return 'env', 'ironic: request failed: %r' % (exc,)
    return None
