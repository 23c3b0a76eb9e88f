"""Configuration checks: every problem as one line naming option and value.

Used by the daemon before it touches anything (a bad configuration never
starts or stops dnsmasq) and by ``pxefilterd-ctl check-config``.
"""

import os

from oslo_config import cfg

from pxefilterd import commands
from pxefilterd.conf import opts as all_opts
from pxefilterd import hostsdir


def parse(conf, argv, prog=None):
    """Parse ``argv`` and the config files into ``conf``; return problems.

    Never raises for bad configuration: a missing or unparsable file, or an
    option value of the wrong type, becomes one line naming it.
    """
    try:
        conf(argv, project='pxefilterd', prog=prog)
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
