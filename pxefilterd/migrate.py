"""ironic-pxe-filter's configuration in pxefilterd's terms.

ironic's own PXE filter (``ironic-pxe-filter``, in ironic since 2024)
reads three ``[pxe_filter]`` options and ``[auto_discovery] enabled`` from
an ironic.conf, and ironic's database through ``[database] connection``.
pxefilterd reads the filter options under ironic's names (``sync_period``
and ``supported_inspect_interfaces`` are its own names too; the others,
:data:`ALIASES`, are oslo.config deprecated names of its options), and asks
ironic's API instead of its database.

:func:`migrate` turns an ironic.conf, already parsed into sections (see
:func:`read_sections`), into the text of a pxefilterd.conf and a report:
one line for each setting it carried, each one it could not carry and why,
and each thing left to the operator.  It refuses, with one line, a file
that ironic-pxe-filter itself could not run with or whose values
pxefilterd cannot take.  Nothing here but :func:`read_sections` does I/O.
"""

import dataclasses
import ipaddress

from oslo_config import cfg
from oslo_config import types

#: ironic's names that pxefilterd reads as another option:
#: ``(group, name) -> (pxefilterd group, pxefilterd name)``.
ALIASES = {
    ('pxe_filter', 'dhcp_hostsdir'): ('dnsmasq_pxe_filter', 'dhcp_hostsdir'),
    ('auto_discovery', 'enabled'): ('pxe_filter', 'auto_discovery'),
}

#: Options of the sections ironic shares with the filter that belong to
#: ironic alone: ``(group, name) -> what they are``.
IRONIC_ONLY = {
    ('auto_discovery', 'driver'):
        'the driver ironic enrolls discovered nodes with',
    ('auto_discovery', 'inspection_scope'):
        'the inspection scope ironic gives the nodes it enrolls',
}

#: ironic's default of the options whose default differs in pxefilterd.
IRONIC_SYNC_PERIOD = 45

#: ``[service_catalog]`` options (where ironic finds its own API) that say
#: where the API is, not who ironic is: carried into ``[ironic]``.
_ENDPOINT_OPTIONS = ('endpoint_override', 'region_name', 'valid_interfaces',
                     'service_name', 'cafile', 'insecure')


class MigrationError(Exception):
    """The file cannot be migrated; the message says why, in one line."""


@dataclasses.dataclass
class Migration:
    """The result of :func:`migrate`.

    :ivar text: the pxefilterd.conf to write.
    :ivar report: ``[(kind, line)]``, kind ``carried``, ``not carried`` or
        ``to do``, in the order of the sections of the source.
    """

    text: str
    report: list


def read_sections(path):
    """Parse ``path`` as oslo.config does; return ``{section: {name:
    value}}`` (section names lowercased, ``DEFAULT`` kept; the last value
    of an option repeated in a section wins, as in oslo.config).

    :raises MigrationError: the file cannot be read or parsed.
    """
    raw = {}
    try:
        cfg.ConfigParser(path, raw).parse()
    except OSError as exc:
        raise MigrationError('cannot read %s: %s'
                             % (path, exc.strerror or exc)) from exc
    except cfg.ParseError as exc:
        raise MigrationError('%s cannot be parsed: %s' % (path, exc)) from exc
    sections = {}
    for section, options in raw.items():
        name = section if section == 'DEFAULT' else section.lower()
        target = sections.setdefault(name, {})
        for option, values in options.items():
            target[option] = values[-1]
    return sections


def _convert(source, group, name, value, kind):
    if '$' in value:
        raise MigrationError(
            '%s: [%s] %s = %s refers to another option ($...): write the '
            'value out in the file first' % (source, group, name, value))
    try:
        return kind(value)
    except ValueError as exc:
        raise MigrationError('%s: [%s] %s = %s: invalid value: %s'
                             % (source, group, name, value, exc)) from exc


def _api_endpoint(sections):
    """Return ``(url, where from)`` of ironic's API for a client on another
    host, from the ironic.conf, or ``(None, None)``."""
    catalog = sections.get('service_catalog', {})
    if catalog.get('endpoint_override'):
        return catalog['endpoint_override'], '[service_catalog] ' \
            'endpoint_override'
    api = sections.get('api', {})
    if api.get('public_endpoint'):
        return api['public_endpoint'], '[api] public_endpoint'
    host = api.get('host_ip', '')
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None, None
    if address.is_unspecified:
        return None, None
    scheme = ('https' if types.Boolean()(api.get('enable_ssl_api', 'false'))
              else 'http')
    shown = '[%s]' % address if address.version == 6 else str(address)
    return ('%s://%s:%s' % (scheme, shown, api.get('port', '6385')),
            '[api] host_ip and port')


class _Writer:
    """Collects the output sections and the report."""

    def __init__(self):
        self.groups = {}
        self.report = []

    def set(self, group, name, value, comment=None):
        lines = self.groups.setdefault(group, [])
        if comment:
            lines.extend('# ' + c for c in comment)
        lines.append('%s = %s' % (name, value))

    def comment(self, group, lines):
        self.groups.setdefault(group, []).extend(
            '#' + (' ' + c if c else '') for c in lines)

    def note(self, kind, line):
        self.report.append((kind, line))

    def text(self, header):
        out = ['# ' + h for h in header]
        for group in ('DEFAULT', 'pxe_filter', 'dnsmasq_pxe_filter',
                      'ironic'):
            if group in self.groups:
                out.extend(['', '[%s]' % group] + self.groups[group])
        return '\n'.join(out) + '\n'


def migrate(sections, source):
    """Return the :class:`Migration` of ironic.conf ``sections`` (as
    :func:`read_sections` returns them; ``source`` names the file).

    Carried, with ironic's meaning: ``[pxe_filter] dhcp_hostsdir``,
    ``sync_period`` and ``supported_inspect_interfaces``, ``[auto_discovery]
    enabled``, ``[DEFAULT] debug``, and where ironic's API is.  Never
    carried: credentials (the database's, ironic's own service user's).

    :raises MigrationError: no ``[pxe_filter] dhcp_hostsdir`` (ironic-pxe-
        filter refuses to start without it), or a value pxefilterd cannot
        take (wrong type, out of range, a ``$`` reference, an empty list of
        interfaces).
    """
    w = _Writer()
    pf = sections.get('pxe_filter', {})
    hostsdir = pf.get('dhcp_hostsdir', '').strip()
    if not hostsdir:
        raise MigrationError(
            '%s: no [pxe_filter] dhcp_hostsdir: ironic-pxe-filter cannot run '
            'with this file, so there is nothing to migrate' % source)
    hostsdir = _convert(source, 'pxe_filter', 'dhcp_hostsdir', hostsdir, str)
    handled = {('pxe_filter', 'dhcp_hostsdir')}
    w.note('carried', '[pxe_filter] dhcp_hostsdir -> [dnsmasq_pxe_filter] '
           'dhcp_hostsdir = %s' % hostsdir)

    default = sections.get('DEFAULT', {})
    if 'debug' in default:
        w.set('DEFAULT', 'debug',
              _convert(source, 'DEFAULT', 'debug', default['debug'],
                       types.Boolean()))
        w.note('carried', '[DEFAULT] debug')
        handled.add(('DEFAULT', 'debug'))

    if 'sync_period' in pf:
        period = _convert(source, 'pxe_filter', 'sync_period',
                          pf['sync_period'], types.Integer(max=86400))
        if period <= 0:
            # ironic waits 0 s between syncs; pxefilterd's 0 is "never".
            raise MigrationError(
                '%s: [pxe_filter] sync_period = %d makes ironic-pxe-filter '
                'sync without a pause, but means "no full listing after the '
                'first" to pxefilterd: write the period you want (ironic\'s '
                'default: %d)' % (source, period, IRONIC_SYNC_PERIOD))
        w.set('pxe_filter', 'sync_period', period, comment=[
            "ironic-pxe-filter's only synchronisation; here the full "
            'listing of',
            'every port, beside the polls that see inspections start and '
            'end',
            'within seconds.'])
        w.note('carried', '[pxe_filter] sync_period = %d (now the period of '
               'the full listing; inspections are seen within about 1.5 s '
               'whatever it is)' % period)
    else:
        w.note('not carried', "[pxe_filter] sync_period is not set: "
               "ironic's default (%d s) is not written, pxefilterd's "
               '(900 s) applies to its full listing: inspections are still '
               'seen within about 1.5 s, but a port or node deleted while '
               'no node is inspected keeps its deny that long (write '
               'sync_period = %d to keep ironic\'s bound)'
               % (IRONIC_SYNC_PERIOD, IRONIC_SYNC_PERIOD))
    handled.add(('pxe_filter', 'sync_period'))

    if 'supported_inspect_interfaces' in pf:
        interfaces = _convert(source, 'pxe_filter',
                              'supported_inspect_interfaces',
                              pf['supported_inspect_interfaces'],
                              types.List())
        if not interfaces:
            raise MigrationError(
                '%s: [pxe_filter] supported_inspect_interfaces is empty: no '
                'node could ever boot; name the in-band inspect interfaces '
                '(ironic\'s default: agent)' % source)
        w.set('pxe_filter', 'supported_inspect_interfaces',
              ','.join(interfaces))
        w.note('carried', '[pxe_filter] supported_inspect_interfaces = %s'
               % ','.join(interfaces))
    handled.add(('pxe_filter', 'supported_inspect_interfaces'))

    discovery = sections.get('auto_discovery', {})
    if 'enabled' in discovery:
        enabled = _convert(source, 'auto_discovery', 'enabled',
                           discovery['enabled'], types.Boolean())
        w.set('pxe_filter', 'auto_discovery', enabled,
              comment=['from [auto_discovery] enabled'])
        w.note('carried', '[auto_discovery] enabled -> [pxe_filter] '
               'auto_discovery = %s' % enabled)
    handled.add(('auto_discovery', 'enabled'))
    for key, what in IRONIC_ONLY.items():
        if key[1] in sections.get(key[0], {}):
            w.note('not carried', '[%s] %s: %s; the PXE filter does not '
                   'need it' % (key[0], key[1], what))
            handled.add(key)

    w.set('dnsmasq_pxe_filter', 'dhcp_hostsdir', hostsdir,
          comment=['from [pxe_filter] dhcp_hostsdir'])
    w.comment('dnsmasq_pxe_filter', [
        'ironic-pxe-filter never purged the hostsdir, nor started or '
        'stopped',
        'dnsmasq.  pxefilterd purges it at start (stale records go) when it '
        'can',
        'make dnsmasq re-read it: set dnsmasq_reload_command (or',
        'dnsmasq_start_command and dnsmasq_stop_command, to let pxefilterd '
        'run',
        'dnsmasq: admin guide, section 2) and remove the next line.'])
    w.set('dnsmasq_pxe_filter', 'purge_dhcp_hostsdir', False)
    w.note('to do', '[dnsmasq_pxe_filter] purge_dhcp_hostsdir = False is '
           'written (ironic-pxe-filter never purged the hostsdir): set '
           'dnsmasq_reload_command, or dnsmasq_start_command and '
           'dnsmasq_stop_command, then remove that line so that stale '
           'records are purged at start')

    _migrate_api_access(sections, source, w, handled)
    _report_the_rest(sections, w, handled)
    header = [
        'pxefilterd configuration written by "pxefilterd-ctl '
        'migrate-config"',
        'from %s (the settings of ironic-pxe-filter).' % source,
        'Lines marked TODO need you; then check it with',
        '  pxefilterd-ctl --config-file THIS-FILE check-config']
    return Migration(text=w.text(header), report=w.report)


def _migrate_api_access(sections, source, w, handled):
    """``[database]`` becomes ``[ironic]``: where the API is, how to
    authenticate (the credentials are the operator's to give)."""
    if 'connection' in sections.get('database', {}):
        w.note('not carried', '[database] connection: pxefilterd asks '
               "ironic's API, not its database (the dnsmasq host needs no "
               'database credentials): [ironic] holds API credentials '
               'instead')
    handled.update(('database', n) for n in sections.get('database', {}))
    strategy = sections.get('DEFAULT', {}).get('auth_strategy')
    shown = ('[DEFAULT] auth_strategy = %s' % strategy if strategy
             else "[DEFAULT] auth_strategy (ironic's default: keystone)")
    strategy = strategy or 'keystone'
    handled.add(('DEFAULT', 'auth_strategy'))
    catalog = sections.get('service_catalog', {})
    w.comment('ironic', [
        "ironic-pxe-filter read ironic's database; pxefilterd asks "
        "ironic's API.",
        'Give it a user of its own that may list ports and nodes (a '
        'reader).'])
    for name in _ENDPOINT_OPTIONS:
        if name in catalog and name != 'endpoint_override':
            w.set('ironic', name, catalog[name])
            w.note('carried', '[service_catalog] %s -> [ironic] %s'
                   % (name, name))
            handled.add(('service_catalog', name))
    if strategy in ('noauth', 'http_basic'):
        url, origin = _api_endpoint(sections)
        w.set('ironic', 'auth_type',
              'none' if strategy == 'noauth' else 'http_basic')
        w.note('carried', '%s -> [ironic] auth_type = %s' % (
            shown, 'none' if strategy == 'noauth' else 'http_basic'))
        if url:
            w.set('ironic', 'endpoint_override', url,
                  comment=['from %s' % origin])
            w.note('carried', '%s -> [ironic] endpoint_override = %s (check '
                   'that the dnsmasq host reaches it)' % (origin, url))
            handled.add(('service_catalog', 'endpoint_override'))
        else:
            w.comment('ironic', ['TODO: the URL of ironic\'s API, e.g.',
                                 'endpoint_override = http://IRONIC-API:6385'])
            w.note('to do', '[ironic] endpoint_override: the URL of '
                   "ironic's API (not in %s: its API listens on every "
                   'address)' % source)
        if strategy == 'http_basic':
            w.comment('ironic', ['TODO: a user of ironic\'s htpasswd file',
                                 'username =', 'password ='])
            w.note('to do', '[ironic] username and password: a user of '
                   "ironic's HTTP basic authentication (its htpasswd file "
                   'holds only hashes)')
    else:
        w.set('ironic', 'auth_type', 'password')
        w.note('carried', '%s -> [ironic] auth_type = password' % shown)
        for name in ('auth_url', 'endpoint_override'):
            if name in catalog:
                w.set('ironic', name, catalog[name])
                w.note('carried', '[service_catalog] %s -> [ironic] %s'
                       % (name, name))
                handled.add(('service_catalog', name))
        if 'auth_url' not in catalog:
            w.comment('ironic', ['TODO: keystone\'s URL', 'auth_url ='])
            w.note('to do', "[ironic] auth_url: keystone's URL (not in "
                   '[service_catalog])')
        w.comment('ironic', [
            "TODO: pxefilterd's own user (admin guide, [ironic])",
            'username =', 'password =', 'project_name = service',
            'user_domain_name = Default', 'project_domain_name = Default'])
        w.note('to do', "[ironic] username, password, project_name, "
               "user_domain_name, project_domain_name: pxefilterd's own "
               'keystone user (it needs to list ports and nodes: a reader)')
    secret = sorted(n for n in catalog if ('service_catalog', n)
                    not in handled)
    if secret:
        w.note('not carried', '[service_catalog] %s: ironic\'s own service '
               'user; pxefilterd needs a user of its own'
               % ', '.join(secret))
        handled.update(('service_catalog', n) for n in secret)
    if 'keystone_authtoken' in sections:
        w.note('not carried', "[keystone_authtoken]: ironic's own "
               'credentials to check the tokens of its clients; pxefilterd '
               'is a client')
        handled.update(('keystone_authtoken', n)
                       for n in sections['keystone_authtoken'])


def _report_the_rest(sections, w, handled):
    for section, options in sections.items():
        rest = [n for n in options if (section, n) not in handled]
        if not rest:
            continue
        if section == 'DEFAULT':
            w.note('not carried', '[DEFAULT] %s: ironic\'s own settings '
                   '(pxefilterd logs to stderr, the journal under systemd; '
                   'its oslo.log options are in the sample configuration)'
                   % ', '.join(sorted(rest)))
        elif section == 'metrics':
            w.note('not carried', "[metrics] %s: ironic's statsd metrics; "
                   'pxefilterd serves Prometheus metrics ([metrics] enabled)'
                   % ', '.join(sorted(rest)))
        elif section in ('pxe_filter', 'auto_discovery'):
            w.note('not carried', '[%s] %s: not an option of '
                   'ironic-pxe-filter' % (section, ', '.join(sorted(rest))))
        else:
            w.note('not carried', '[%s] (%d option(s)): ironic\'s own '
                   'settings, not the PXE filter\'s' % (section, len(rest)))
