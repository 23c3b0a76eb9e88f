"""Configuration checks: every problem as one line naming option and value.

Used by the daemon before it touches anything (a bad configuration never
starts or stops dnsmasq) and by ``pxefilterd-ctl check-config``.
"""

import difflib
import glob
import os

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg
from oslo_config import generator
from oslo_config import validator
from oslo_log import _options as log_opts

from pxefilterd import commands
from pxefilterd import conf as pxf_conf
from pxefilterd.conf import opts as all_opts
from pxefilterd import hostsdir
from pxefilterd import ironic


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
    if pf.driver != 'dnsmasq':
        return problems
    if (dn.purge_dhcp_hostsdir and not dn.dnsmasq_start_command
            and not dn.dnsmasq_reload_command):
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


def _known_options(conf):
    """The machine-readable option data oslo-config-validator compares a
    file with: pxefilterd's options, oslo.log's, and those of the
    configured ``[ironic] auth_type`` plugin."""
    namespaces = [('pxefilterd', all_opts.list_opts()),
                  ('oslo.log', log_opts.list_opts())]
    try:
        namespaces.append(('keystoneauth1', [(
            'ironic', ks_loading.get_auth_plugin_conf_options(
                conf.ironic.auth_type))]))
    except Exception:   # no or unknown auth_type: reported elsewhere
        pass
    groups = generator._get_groups(namespaces)
    return generator._generate_machine_readable_data(groups,
                                                     cfg.ConfigOpts())


def unknown_options(conf):
    """Return one line per option or section in the files read that
    pxefilterd does not know (oslo.config would silently ignore it).

    Uses oslo.config's own validator (the checks behind
    ``oslo-config-validator``) on the files as its parser reads them.
    """
    data = _known_options(conf)
    lines = []
    for path in files_read(conf):
        sections = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except (OSError, cfg.ParseError):
            continue          # reported by parse()
        for section, options in sections.items():
            if section not in data['options']:
                lines.append('%s: section [%s] is not a pxefilterd section; '
                             'its %d option(s) are ignored'
                             % (path, section, len(options)))
                continue
            known = [o['name'] for o in data['options'][section]['opts']]
            for option in options:
                if validator._validate_opt(section, option, data):
                    continue
                if validator._validate_deprecated_opt(section, option, data):
                    lines.append('%s: [%s] %s is deprecated; see the '
                                 'sample configuration for its new name'
                                 % (path, section, option))
                    continue
                close = difflib.get_close_matches(option, known, n=1)
                lines.append('%s: [%s] %s is not a pxefilterd option and is '
                             'ignored%s' % (path, section, option,
                                            ' (did you mean %s?)' % close[0]
                                            if close else ''))
    return lines
