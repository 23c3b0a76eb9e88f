"""pxefilterd-ctl migrate-config: an ironic.conf's filter settings become a
pxefilterd.conf; what cannot be carried is said, one line each."""

import grp
import io
import os
import stat

import pytest
from oslo_config import cfg
from oslo_log import log

from pxefilterd import checks
from pxefilterd.cmd import ctl
from pxefilterd import conf as pxf_conf
from pxefilterd import migrate
from pxefilterd_harness import ironic as harness_ironic

SECRET = 'S3cret-never-copied'


def run(*argv):
    out = io.StringIO()
    code = ctl.main(list(argv), out=out)
    return code, out.getvalue()


def ironic_conf(tmp_path, text, name='ironic.conf'):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def migrated(tmp_path, text):
    """Return ``(Migration, report lines)`` of ironic.conf ``text``."""
    path = ironic_conf(tmp_path, text)
    result = migrate.migrate(migrate.read_sections(path), path)
    return result, ['%s: %s' % kv for kv in result.report]


def load(tmp_path, text, name='pxefilterd.conf'):
    """Parse ``text`` as pxefilterd does; return the ConfigOpts."""
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    log.register_options(conf)
    path = tmp_path / name
    path.write_text(text)
    conf(['--config-file', str(path)], project='pxefilterd',
         default_config_files=[])
    return conf


FILTER = ('[pxe_filter]\ndhcp_hostsdir = /var/lib/ironic/dhcp-hostsdir\n')


# -- each mapping -------------------------------------------------------------

@pytest.mark.parametrize('ironic_text, group, name, value', [
    # ironic's name -> pxefilterd's option, ironic's meaning
    (FILTER, 'dnsmasq_pxe_filter', 'dhcp_hostsdir',
     '/var/lib/ironic/dhcp-hostsdir'),
    (FILTER + 'sync_period = 20\n', 'pxe_filter', 'sync_period', 20),
    (FILTER + 'supported_inspect_interfaces = agent,inspector\n',
     'pxe_filter', 'supported_inspect_interfaces', ['agent', 'inspector']),
    (FILTER + '[auto_discovery]\nenabled = true\n', 'pxe_filter',
     'auto_discovery', True),
    (FILTER + '[auto_discovery]\nenabled = False\n', 'pxe_filter',
     'auto_discovery', False),
    ('[DEFAULT]\ndebug = true\n' + FILTER, 'DEFAULT', 'debug', True),
])
def test_each_filter_option_is_carried(tmp_path, ironic_text, group, name,
                                       value):
    result, report = migrated(tmp_path, ironic_text)
    conf = load(tmp_path, result.text)
    got = getattr(conf, name) if group == 'DEFAULT' else getattr(
        getattr(conf, group), name)
    assert got == value
    assert any(line.startswith('carried: ') and name in line
               for line in report), report


def test_options_not_set_in_ironic_conf_are_not_written(tmp_path):
    result, report = migrated(tmp_path, FILTER)
    # ironic's default strategy, said as such
    assert ("carried: [DEFAULT] auth_strategy (ironic's default: keystone) "
            '-> [ironic] auth_type = password') in report
    conf = load(tmp_path, result.text)
    assert conf.pxe_filter.auto_discovery is False
    assert conf.pxe_filter.supported_inspect_interfaces == ['agent']
    assert conf.pxe_filter.sync_period == 900
    assert 'sync_period' not in result.text
    # the default that differs is said, with what it means
    assert ("not carried: [pxe_filter] sync_period is not set: ironic's "
            "default (45 s) is not written, pxefilterd's (900 s) applies to "
            "its full listing") in '\n'.join(report)


def test_the_hostsdir_is_not_purged_until_dnsmasq_can_reread_it(tmp_path):
    """ironic-pxe-filter never purged, and pxefilterd refuses to purge under
    a dnsmasq it cannot reload: the migrated file says so and passes."""
    result, report = migrated(tmp_path, FILTER)
    conf = load(tmp_path, result.text)
    assert conf.dnsmasq_pxe_filter.purge_dhcp_hostsdir is False
    assert [line for line in report if line.startswith('to do: [dnsmasq')] \
        == ['to do: [dnsmasq_pxe_filter] purge_dhcp_hostsdir = False is '
            'written (ironic-pxe-filter never purged the hostsdir): set '
            'dnsmasq_reload_command, or dnsmasq_start_command and '
            'dnsmasq_stop_command, then remove that line so that stale '
            'records are purged at start']


def test_ironics_own_discovery_options_are_named_not_carried(tmp_path):
    result, report = migrated(tmp_path, FILTER + '[auto_discovery]\n'
                              'enabled = true\ndriver = ipmi\n'
                              'inspection_scope = x\n')
    assert ('not carried: [auto_discovery] driver: the driver ironic '
            'enrolls discovered nodes with; the PXE filter does not need it'
            ) in report
    assert any(line.startswith('not carried: [auto_discovery] '
                               'inspection_scope: ') for line in report)
    assert 'ipmi' not in result.text


# -- ironic's API instead of its database -------------------------------------

def test_database_and_service_credentials_are_never_carried(tmp_path):
    result, report = migrated(tmp_path, (
        '[DEFAULT]\nauth_strategy = keystone\n' + FILTER
        + '[database]\nconnection = mysql+pymysql://ironic:%s@db/ironic\n'
        '[keystone_authtoken]\nauth_url = http://198.51.100.9:5000\n'
        'username = ironic\npassword = %s\n'
        '[service_catalog]\nauth_url = http://198.51.100.9:5000\n'
        'username = ironic\npassword = %s\nregion_name = RegionTwo\n'
        'valid_interfaces = internal\n') % (SECRET, SECRET, SECRET))
    assert SECRET not in result.text
    assert ("not carried: [database] connection: pxefilterd asks ironic's "
            'API, not its database (the dnsmasq host needs no database '
            'credentials): [ironic] holds API credentials instead') in report
    assert ("not carried: [keystone_authtoken]: ironic's own credentials to "
            'check the tokens of its clients; pxefilterd is a client'
            ) in report
    assert ("not carried: [service_catalog] password, username: ironic's "
            'own service user; pxefilterd needs a user of its own') in report
    assert ('carried: [DEFAULT] auth_strategy = keystone -> [ironic] '
            'auth_type = password') in report
    conf = load(tmp_path, result.text)
    assert conf.ironic.auth_type == 'password'
    # (a keystoneauth plugin option: registered when the plugin is loaded)
    written = migrate.read_sections(str(tmp_path / 'pxefilterd.conf'))
    assert written['ironic']['auth_url'] == 'http://198.51.100.9:5000'
    assert conf.ironic.region_name == 'RegionTwo'
    assert conf.ironic.valid_interfaces == ['internal']
    assert any(line.startswith('to do: [ironic] username, password')
               for line in report)


@pytest.mark.parametrize('extra, endpoint, origin', [
    ('[service_catalog]\nendpoint_override = http://198.51.100.7:6385\n'
     '[api]\npublic_endpoint = http://198.51.100.8:6385\n',
     'http://198.51.100.7:6385', '[service_catalog] endpoint_override'),
    ('[api]\npublic_endpoint = https://ironic.example.org:6385\n',
     'https://ironic.example.org:6385', '[api] public_endpoint'),
    ('[api]\nhost_ip = 198.51.100.8\nport = 6390\n',
     'http://198.51.100.8:6390', '[api] host_ip and port'),
    ('[api]\nhost_ip = 2001:db8::8\nenable_ssl_api = true\n',
     'https://[2001:db8::8]:6385', '[api] host_ip and port'),
])
def test_where_the_api_is_comes_from_the_ironic_conf(tmp_path, extra,
                                                     endpoint, origin):
    result, report = migrated(tmp_path, '[DEFAULT]\nauth_strategy = noauth\n'
                              + FILTER + extra)
    conf = load(tmp_path, result.text)
    assert conf.ironic.auth_type == 'none'
    assert conf.ironic.endpoint_override == endpoint
    assert ('carried: %s -> [ironic] endpoint_override = %s (check that the '
            'dnsmasq host reaches it)' % (origin, endpoint)) in report


def test_an_api_on_every_address_leaves_the_endpoint_to_do(tmp_path):
    result, report = migrated(tmp_path, '[DEFAULT]\nauth_strategy = noauth\n'
                              + FILTER + '[api]\nhost_ip = 0.0.0.0\n')
    conf = load(tmp_path, result.text)
    assert conf.ironic.endpoint_override is None
    assert any(line.startswith('to do: [ironic] endpoint_override: the URL '
                               "of ironic's API") for line in report)
    # and check-config says it is missing until it is set
    assert '[ironic] endpoint_override is required without keystone ' \
        'authentication (auth_type = none)' in checks.check(conf)


def test_http_basic(tmp_path):
    result, report = migrated(tmp_path, '[DEFAULT]\nauth_strategy = '
                              'http_basic\nhttp_basic_auth_user_file = '
                              '/etc/ironic/htpasswd\n' + FILTER
                              + '[api]\nhost_ip = 198.51.100.8\n')
    conf = load(tmp_path, result.text)
    assert conf.ironic.auth_type == 'http_basic'
    assert any(line.startswith('to do: [ironic] username and password')
               for line in report)
    assert any(line.startswith('not carried: [DEFAULT] '
                               'http_basic_auth_user_file')
               for line in report)


# -- a whole, real ironic.conf ------------------------------------------------

def test_the_ironic_conf_of_a_real_ironic_migrates_to_a_working_file(
        tmp_path):
    """The ironic.conf the integration tests run ironic 39 with, plus
    ironic-pxe-filter's sections: every section is accounted for, and the
    result passes pxefilterd's checks with nothing unknown in it."""
    hostsdir = tmp_path / 'hostsdir'
    hostsdir.mkdir()
    text = harness_ironic._CONF_TEMPLATE.format(
        host='conductor-1', port=6385, max_limit=1000,
        db_path=tmp_path / 'ironic.db', lock_path=tmp_path / 'locks',
        check_interval=10, inspect_wait_timeout=3600,
        extra='[pxe_filter]\ndhcp_hostsdir = %s\nsync_period = 45\n'
              '[auto_discovery]\nenabled = false\n' % hostsdir)
    result, report = migrated(tmp_path, text)
    sections = migrate.read_sections(str(tmp_path / 'ironic.conf'))
    for section in sections:
        assert any('[%s]' % section in line for line in report), section
    conf = load(tmp_path, result.text)
    assert conf.dnsmasq_pxe_filter.dhcp_hostsdir == str(hostsdir)
    assert conf.pxe_filter.sync_period == 45
    assert conf.ironic.endpoint_override == 'http://127.0.0.1:6385'
    assert checks.check(conf) == []
    assert checks.unknown_options(conf) == []
    assert checks.ironic_names(conf) == []


# -- refusals: one line, exit 78 ----------------------------------------------

@pytest.mark.parametrize('text, message', [
    ('[DEFAULT]\ndebug = true\n',
     'no [pxe_filter] dhcp_hostsdir: ironic-pxe-filter cannot run with this '
     'file, so there is nothing to migrate'),
    (FILTER + 'sync_period = soon\n',
     '[pxe_filter] sync_period = soon: invalid value: '),
    (FILTER + 'sync_period = 0\n',
     '[pxe_filter] sync_period = 0 makes ironic-pxe-filter sync without a '
     'pause, but means "no full listing after the first" to pxefilterd'),
    (FILTER + 'sync_period = 100000\n',
     '[pxe_filter] sync_period = 100000: invalid value: '),
    (FILTER + 'supported_inspect_interfaces =\n',
     '[pxe_filter] supported_inspect_interfaces is empty: no node could '
     'ever boot'),
    (FILTER + '[auto_discovery]\nenabled = maybe\n',
     '[auto_discovery] enabled = maybe: invalid value: '),
    ('[pxe_filter]\ndhcp_hostsdir = $state_path/dhcp-hostsdir\n',
     '[pxe_filter] dhcp_hostsdir = $state_path/dhcp-hostsdir refers to '
     'another option ($...): write the value out in the file first'),
    ('[pxe_filter\ndhcp_hostsdir = /x\n', 'cannot be parsed: '),
])
def test_what_cannot_be_migrated_is_refused_in_one_line(tmp_path, capsys,
                                                        text, message):
    path = ironic_conf(tmp_path, text)
    out_file = tmp_path / 'pxefilterd.conf'
    code, out = run('migrate-config', path, '--output', str(out_file))
    err = capsys.readouterr().err
    assert code == 78
    assert out == ''
    assert not out_file.exists()
    assert len(err.splitlines()) == 1, err
    assert err.startswith('pxefilterd-ctl: cannot migrate: ')
    assert message in err


def test_a_missing_ironic_conf_is_refused(tmp_path, capsys):
    code, out = run('migrate-config', str(tmp_path / 'nope.conf'))
    err = capsys.readouterr().err
    assert code == 78 and out == ''
    assert err == ('pxefilterd-ctl: cannot migrate: cannot read %s: No such '
                   'file or directory\n' % (tmp_path / 'nope.conf'))


# -- the command's output -----------------------------------------------------

def test_to_stdout_the_report_goes_to_stderr(tmp_path, capsys):
    path = ironic_conf(tmp_path, FILTER + '[database]\nconnection = x\n')
    code, out = run('migrate-config', path)
    err = capsys.readouterr().err
    assert code == 0
    assert out.startswith('# pxefilterd configuration written by')
    assert '[dnsmasq_pxe_filter]\n' in out
    assert 'carried: [pxe_filter] dhcp_hostsdir -> [dnsmasq_pxe_filter] ' \
        'dhcp_hostsdir = /var/lib/ironic/dhcp-hostsdir\n' in err
    assert 'not carried: [database] connection: ' in err
    assert all(line.split(': ', 1)[0] in ('carried', 'not carried', 'to do')
               for line in err.splitlines())


def test_to_a_file_it_is_created_0640_and_never_overwritten(tmp_path,
                                                             capsys):
    path = ironic_conf(tmp_path, FILTER)
    target = tmp_path / 'pxefilterd.conf'
    code, out = run('migrate-config', path, '-o', str(target),
                    '--group', 'no-such-group-pxf')
    assert code == 0
    assert out.startswith('wrote %s\nto do: %s is 0640 and yours: make it '
                          "readable by the daemon's user" % (target, target))
    assert '\ncarried: ' in out
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640 & ~_umask()
    assert '[dnsmasq_pxe_filter]' in target.read_text()
    assert capsys.readouterr().err == ''
    target.write_text('# mine\n')
    code, out = run('migrate-config', path, '-o', str(target))
    assert code == 1 and out == ''
    assert capsys.readouterr().err == (
        'pxefilterd-ctl: cannot create %s: File exists (never overwritten: '
        'choose another name, or remove it)\n' % target)
    assert target.read_text() == '# mine\n'


@pytest.mark.skipif(os.geteuid() != 0, reason='chown needs root')
def test_as_root_the_file_is_given_to_the_daemons_group(tmp_path):
    # the daemon (User=pxefilterd) reads it through its group; root:root
    # 0640 would pass check-config (run as root) and fail the daemon
    group = grp.getgrgid(1)          # "daemon" on Debian: any group will do
    target = tmp_path / 'pxefilterd.conf'
    code, out = run('migrate-config', ironic_conf(tmp_path, FILTER),
                    '-o', str(target), '--group', group.gr_name)
    assert code == 0
    assert out.startswith('wrote %s (root:%s, mode 0640)\ncarried: ' % (
        target, group.gr_name))
    st = os.stat(target)
    assert (st.st_uid, st.st_gid) == (0, group.gr_gid)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
