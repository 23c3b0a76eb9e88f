"""Bad configuration: one clear line per problem, naming option and value."""

import pathlib

from oslo_config import cfg
import pytest

from pxefilterd import checks
from pxefilterd.cmd import daemon
from pxefilterd import conf as pxf_conf
from pxefilterd.conf import opts
from pxefilterd import policy

REPO = pathlib.Path(__file__).resolve().parents[2]
OWN_IRONIC = {o.dest for o in pxf_conf.ironic.opts} | {'timeout'}
TYPED = [(group, opt) for group, options in opts.list_opts()
         for opt in options
         if isinstance(opt, (cfg.IntOpt, cfg.FloatOpt, cfg.BoolOpt,
                             cfg.PortOpt))
         or getattr(opt.type, 'choices', None)]


def load(tmp_path, text):
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    path = tmp_path / 'pxefilterd.conf'
    path.write_text(text)
    return daemon.load_config(conf, ['--config-file', str(path)])


def good_base(tmp_path):
    hd = tmp_path / 'hd'
    hd.mkdir(exist_ok=True)
    return {'DEFAULT': {'root_helper': ''},
            'dnsmasq_pxe_filter': {'dhcp_hostsdir': str(hd),
                                   'dnsmasq_start_command': 'true'},
            'ironic': {'auth_type': 'none',
                       'endpoint_override': 'http://127.0.0.1:6385'}}


def render(groups):
    return ''.join('[%s]\n%s' % (group, ''.join(
        '%s = %s\n' % item for item in values.items()))
        for group, values in groups.items())


def with_option(base, group, name, value):
    base.setdefault(group, {})[name] = value
    return render(base)


def test_good_config_has_no_problems(tmp_path):
    assert load(tmp_path, render(good_base(tmp_path))) == []


@pytest.mark.parametrize('group,opt', TYPED,
                         ids=['%s.%s' % (g, o.dest) for g, o in TYPED])
@pytest.mark.parametrize('value', ['not-a-value', '', '9' * 40, '-1e309'])
def test_every_typed_option_rejects_garbage(tmp_path, group, opt, value):
    text = with_option(good_base(tmp_path), group, opt.dest, value)
    problems = load(tmp_path, text)
    mentioned = [p for p in problems if opt.dest in p]
    if problems:
        assert mentioned, problems
    for line in problems:
        assert '\n' not in line
    ours = opt in dict(opts.list_opts())[group] and (
        group != 'ironic' or opt.dest in OWN_IRONIC)
    if value == 'not-a-value' or (value == '9' * 40 and ours):
        assert mentioned, '%s accepted %r' % (opt.dest, value)


@pytest.mark.parametrize('text,needle', [
    ('[pxe_filter]\nauto_discovery = True\ndeny_unknown_macs = True\n',
     'cannot be combined'),
    ('[pxe_filter]\nsupported_inspect_interfaces =\n', 'is empty'),
    ('[dnsmasq_pxe_filter]\ndnsmasq_stop_command = kill "$(cat x)\n',
     '[dnsmasq_pxe_filter] dnsmasq_stop_command = kill "$(cat x): cannot '
     'be parsed'),
    ('[DEFAULT]\nroot_helper = sudo \'x\n', '[DEFAULT] root_helper'),
    ('[dnsmasq_pxe_filter]\ndnsmasq_start_command =\n',
     'purge_dhcp_hostsdir = True with an empty dnsmasq_start_command'),
    ('[ironic]\nendpoint_override =\n', '[ironic] endpoint_override is '
     'required'),
    ('[pxe_filter]\ndriver = magic\n', '[pxe_filter] driver'),
    ('[dnsmasq_pxe_filter]\ndnsmasq_child_command = dnsmasq -k\n',
     'dnsmasq_child_command cannot be combined with dnsmasq_start_command'),
    ('[dnsmasq_pxe_filter]\ndnsmasq_start_command =\n'
     'dnsmasq_child_command = sleep 10\n', 'names no dnsmasq program'),
    ('[ironic]\ntimeout =\n', '[ironic] timeout'),
])
def test_semantic_problems(tmp_path, text, needle):
    base = good_base(tmp_path)
    for section in text.split('[')[1:]:
        group, _, body = section.partition(']\n')
        for line in body.splitlines():
            name, _, value = line.partition(' =')
            base.setdefault(group, {})[name] = value.strip()
    problems = load(tmp_path, render(base))
    assert any(needle in p for p in problems), problems


def test_a_child_dnsmasq_needs_no_commands(tmp_path):
    base = good_base(tmp_path)
    base['dnsmasq_pxe_filter'] = {
        'dhcp_hostsdir': base['dnsmasq_pxe_filter']['dhcp_hostsdir'],
        'dnsmasq_child_command': '/usr/sbin/dnsmasq --conf-file=/x'}
    # (purge_dhcp_hostsdir needs no reload command: the child is started)
    assert load(tmp_path, render(base)) == []


def test_missing_hostsdir(tmp_path):
    base = good_base(tmp_path)
    base['dnsmasq_pxe_filter']['dhcp_hostsdir'] = str(tmp_path / 'missing')
    text = render(base)
    problems = load(tmp_path, text)
    assert problems == ['[dnsmasq_pxe_filter] dhcp_hostsdir: %s: directory '
                        'does not exist' % (tmp_path / 'missing')]


def test_unparsable_file(tmp_path):
    problems = load(tmp_path, 'this is [not ini\n')
    assert len(problems) == 1 and 'cannot be parsed' in problems[0]


def test_missing_file(tmp_path):
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    problems = daemon.load_config(conf, ['--config-file',
                                         str(tmp_path / 'nope.conf')])
    assert problems == ['configuration file not found: %s'
                        % (tmp_path / 'nope.conf')]


# -- options and sections pxefilterd does not know --------------------------

def parsed(tmp_path, text, name='pxefilterd.conf'):
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    path = tmp_path / name
    path.write_text(text)
    conf(['--config-file', str(path)], project='pxefilterd')
    return conf, str(path)


def test_a_misspelled_option_is_named_with_a_suggestion(tmp_path):
    conf, path = parsed(tmp_path, '[pxe_filter]\ndeny_unkown_macs = true\n'
                        'sync_period = 60\n')
    assert checks.unknown_options(conf) == [
        '%s: [pxe_filter] deny_unkown_macs is not a pxefilterd option and '
        'is ignored (did you mean deny_unknown_macs?)' % path]


def test_unknown_sections_and_default_options_are_named(tmp_path):
    conf, path = parsed(tmp_path, '[DEFAULT]\ndebug = true\n'
                        'transport_url = rabbit://x\n'
                        '[processing]\nstore_data = none\nhooks = a,b\n'
                        '[metrics]\nlisten_port = 9\n')
    assert checks.unknown_options(conf) == [
        '%s: [DEFAULT] transport_url is not a pxefilterd option and is '
        'ignored' % path,
        '%s: section [processing] is not a pxefilterd section; its 2 '
        'option(s) are ignored' % path]


def test_the_auth_plugins_own_options_are_known(tmp_path):
    conf, _ = parsed(tmp_path, '[ironic]\nauth_type = '
                     'v3applicationcredential\napplication_credential_id = '
                     'x\napplication_credential_secret = y\n'
                     'auth_url = http://198.51.100.5:5000/v3\n'
                     'valid_interfaces = internal\nconnect_retries = 2\n')
    assert checks.unknown_options(conf) == []
    conf, path = parsed(tmp_path, '[ironic]\nauth_type = password\n'
                        'application_credential_id = x\n', name='b.conf')
    assert checks.unknown_options(conf) == [
        '%s: [ironic] application_credential_id is not a pxefilterd option '
        'and is ignored' % path]


def test_deprecated_names_are_reported_as_such(tmp_path):
    conf, path = parsed(tmp_path, '[ironic]\nauth_plugin = password\n')
    assert checks.unknown_options(conf) == [
        '%s: [ironic] auth_plugin is deprecated; see the sample '
        'configuration for its new name' % path]


def test_the_known_options_are_what_oslo_config_validator_knows(tmp_path):
    """checks._known_options builds, from public attributes, the data
    oslo-config-validator builds with private functions of oslo.config's
    generator; compared here (only here) with those, while they exist."""
    from oslo_config import generator
    try:
        get_groups = generator._get_groups
        machine_data = generator._generate_machine_readable_data
    except AttributeError:
        pytest.skip('oslo.config no longer has the functions to compare '
                    'with')
    conf, _ = parsed(tmp_path, '[ironic]\nauth_type = password\n')
    known, deprecated = checks._known_options(conf)
    from keystoneauth1 import loading as ks_loading
    from oslo_log import _options as log_opts
    data = machine_data(get_groups([
        ('pxefilterd', opts.list_opts()),
        ('oslo.log', log_opts.list_opts()),
        ('keystoneauth1', [('ironic', ks_loading
                            .get_auth_plugin_conf_options('password'))])]),
        cfg.ConfigOpts())
    assert set(known) == set(data['options'])
    for group, group_data in data['options'].items():
        names = {o['name'] for o in group_data['opts']}
        names |= {o['dest'] for o in group_data['opts']}
        assert known[group] == names, group
    assert {g: {o['name'] for o in old}
            for g, old in data['deprecated_options'].items()} == deprecated
    assert deprecated     # e.g. keystoneauth's auth_plugin


def test_the_shipped_files_have_no_unknown_options():
    for name in ('pxefilterd.conf.example', 'pxefilterd.conf.sample'):
        conf = cfg.ConfigOpts()
        pxf_conf.register_opts(conf)
        conf(['--config-file', str(REPO / 'etc/pxefilterd' / name)],
             project='pxefilterd')
        assert checks.unknown_options(conf) == [], name


def test_files_read_names_every_file_in_order(tmp_path):
    extra = tmp_path / 'conf.d'
    extra.mkdir()
    (extra / 'b.conf').write_text('[pxe_filter]\n')
    (extra / 'a.conf').write_text('[pxe_filter]\n')
    (extra / 'ignored.txt').write_text('')
    main = tmp_path / 'main.conf'
    main.write_text('[pxe_filter]\n')
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    conf(['--config-file', str(main), '--config-dir', str(extra)],
         project='pxefilterd')
    assert checks.files_read(conf) == [str(main), str(extra / 'a.conf'),
                                       str(extra / 'b.conf')]
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    conf([], project='pxefilterd', default_config_files=[])
    assert checks.files_read(conf) == []


def test_help_says_what_the_daemon_does(capsys):
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    with pytest.raises(SystemExit) as exit_:
        daemon.load_config(conf, ['--help'])
    assert exit_.value.code == 0
    out = ' '.join(capsys.readouterr().out.split())
    assert 'The ironic PXE filter for an inspection dnsmasq' in out
    assert 'the ports of nodes under inspection may PXE boot' in out
    assert 'Exit status: 0 stopped by a signal' in out


def plant_home(tmp_path, monkeypatch):
    """A home directory like the daemon user's state directory, holding the
    configuration oslo.config would find there by default."""
    home = tmp_path / 'home'
    planted = home / '.pxefilterd' / 'pxefilterd.conf.d'
    planted.mkdir(parents=True)
    evil = '[DEFAULT]\nroot_helper = /tmp/planted-helper\n'
    (planted / 'evil.conf').write_text(evil)
    (home / '.pxefilterd' / 'pxefilterd.conf').write_text(evil)
    (home / 'pxefilterd.conf').write_text(evil)
    monkeypatch.setenv('HOME', str(home))
    return home


def test_only_the_files_given_are_read(tmp_path, monkeypatch):
    """Nothing from the home directory (the daemon user's own state
    directory) configures the daemon: only --config-file/--config-dir."""
    plant_home(tmp_path, monkeypatch)
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    path = tmp_path / 'pxefilterd.conf'
    path.write_text('[pxe_filter]\n')
    daemon.load_config(conf, ['--config-file', str(path)])
    assert checks.files_read(conf) == [str(path)]
    assert conf.root_helper != '/tmp/planted-helper'


def test_without_config_file_only_the_system_file_is_read(tmp_path,
                                                          monkeypatch):
    plant_home(tmp_path, monkeypatch)
    system = tmp_path / 'etc' / 'pxefilterd.conf'
    monkeypatch.setattr(pxf_conf, 'DEFAULT_CONFIG_FILE', str(system))
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    daemon.load_config(conf, [])
    assert checks.files_read(conf) == []
    assert conf.root_helper != '/tmp/planted-helper'
    system.parent.mkdir()
    system.write_text('[DEFAULT]\nroot_helper = sudo\n')
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    daemon.load_config(conf, [])
    assert checks.files_read(conf) == [str(system)]
    assert conf.root_helper == 'sudo'


def test_an_unreadable_system_file_is_not_read_by_default(tmp_path,
                                                          monkeypatch):
    """An operator (not in pxefilterd's group) cannot read pxefilterd.conf:
    pxefilterd-ctl explain/status then run with the defaults (they only
    need the socket), instead of failing on the file."""
    system = tmp_path / 'pxefilterd.conf'
    system.write_text('[DEFAULT]\nroot_helper = sudo\n')
    monkeypatch.setattr(pxf_conf, 'DEFAULT_CONFIG_FILE', str(system))
    real_access = pxf_conf.os.access
    monkeypatch.setattr(pxf_conf.os, 'access', lambda path, mode: (
        False if path == str(system) else real_access(path, mode)))
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    assert checks.parse(conf, []) == []
    assert checks.files_read(conf) == []
    assert conf.root_helper != 'sudo'


def test_a_stuck_ironic_fails_closed_by_default():
    """With no successful poll for max_stale_seconds, every MAC is denied:
    on by default (0, never, kept a finished inspection's ports allowed as
    long as ironic stayed stuck), and below ironic's own inspect wait
    timeout (1800 s)."""
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    conf([], project='pxefilterd', default_config_files=[])
    assert 0 < conf.pxe_filter.max_stale_seconds < 1800
    assert daemon.settings_from_conf(conf).max_stale_seconds == \
        conf.pxe_filter.max_stale_seconds


# -- an ironic.conf's filter sections, copied as they are ------------------

IRONIC_SECTIONS = (
    '[pxe_filter]\n'
    'dhcp_hostsdir = {hd}\n'
    'sync_period = 45\n'
    'supported_inspect_interfaces = agent,fake\n'
    '[auto_discovery]\n'
    'enabled = {enabled}\n'
    'driver = ipmi\n'
    'inspection_scope = x\n')


def test_ironics_filter_sections_are_read_with_ironics_meaning(tmp_path):
    hd = tmp_path / 'hd'
    conf, path = parsed(tmp_path, IRONIC_SECTIONS.format(hd=hd,
                                                         enabled='true'))
    assert conf.dnsmasq_pxe_filter.dhcp_hostsdir == str(hd)
    assert conf.pxe_filter.sync_period == 45
    assert conf.pxe_filter.supported_inspect_interfaces == ['agent', 'fake']
    assert conf.pxe_filter.auto_discovery is True
    options = pxf_conf.policy_options(conf)
    assert options.auto_discovery is True
    assert options.supported_interfaces == {'agent', 'fake'}
    # nothing copied is reported as unknown ...
    assert checks.unknown_options(conf) == []
    # ... and each ironic name is said for what it is
    assert checks.ironic_names(conf) == [
        "%s: [pxe_filter] dhcp_hostsdir is ironic's name for "
        '[dnsmasq_pxe_filter] dhcp_hostsdir and is read as it' % path,
        "%s: [auto_discovery] enabled is ironic's name for [pxe_filter] "
        'auto_discovery and is read as it' % path,
        "%s: [auto_discovery] driver is ironic's (the driver ironic enrolls "
        "discovered nodes with), not the PXE filter's, and is not used"
        % path,
        "%s: [auto_discovery] inspection_scope is ironic's (the inspection "
        "scope ironic gives the nodes it enrolls), not the PXE filter's, and "
        'is not used' % path]


def test_a_misspelled_option_in_ironics_discovery_section(tmp_path):
    conf, path = parsed(tmp_path, '[auto_discovery]\nenabeld = true\n')
    assert conf.pxe_filter.auto_discovery is False
    assert checks.unknown_options(conf) == [
        "%s: [auto_discovery] enabeld is not an option of ironic's "
        '[auto_discovery] and is ignored' % path]


def test_pxefilterds_own_name_wins_over_ironics(tmp_path):
    conf, path = parsed(tmp_path, '[pxe_filter]\ndhcp_hostsdir = /ironic\n'
                     'auto_discovery = false\n'
                     '[dnsmasq_pxe_filter]\ndhcp_hostsdir = /mine\n'
                     '[auto_discovery]\nenabled = true\n')
    assert conf.dnsmasq_pxe_filter.dhcp_hostsdir == '/mine'
    assert conf.pxe_filter.auto_discovery is False
    assert checks.ironic_names(conf) == [
        "%s: [pxe_filter] dhcp_hostsdir is ironic's name for "
        '[dnsmasq_pxe_filter] dhcp_hostsdir and is ignored: '
        '[dnsmasq_pxe_filter] dhcp_hostsdir in %s is read instead'
        % (path, path),
        "%s: [auto_discovery] enabled is ironic's name for [pxe_filter] "
        'auto_discovery and is ignored: [pxe_filter] auto_discovery in %s '
        'is read instead' % (path, path)]


def test_across_files_the_last_one_wins_whatever_the_name(tmp_path):
    """oslo.config reads the last file that sets the option under either
    name: what check-config says must be what the daemon reads."""
    first = tmp_path / 'a.conf'
    first.write_text('[dnsmasq_pxe_filter]\ndhcp_hostsdir = /mine\n')
    second = tmp_path / 'b.conf'
    second.write_text('[pxe_filter]\ndhcp_hostsdir = /ironic\n')
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    conf(['--config-file', str(first), '--config-file', str(second)],
         project='pxefilterd')
    assert conf.dnsmasq_pxe_filter.dhcp_hostsdir == '/ironic'
    assert checks.ironic_names(conf) == [
        "%s: [pxe_filter] dhcp_hostsdir is ironic's name for "
        '[dnsmasq_pxe_filter] dhcp_hostsdir and is read as it' % second]


def test_ironics_discovery_switch_is_reloaded_by_sighup(tmp_path):
    """ironic's [auto_discovery] enabled and supported_inspect_interfaces
    are mutable (ironic-pxe-filter applies them on SIGHUP); so here."""
    hd = tmp_path / 'hd'
    conf, path = parsed(tmp_path, IRONIC_SECTIONS.format(hd=hd,
                                                         enabled='false'))
    assert daemon.settings_from_conf(conf).options.auto_discovery is False
    with open(path, 'w') as f:
        f.write(IRONIC_SECTIONS.format(hd=hd, enabled='true').replace(
            'agent,fake', 'agent'))
    conf.mutate_config_files()
    settings = daemon.settings_from_conf(conf)
    assert settings.options.auto_discovery is True
    assert settings.options.supported_interfaces == {'agent'}


def test_the_default_interfaces_are_ironics():
    """ironic 39's [pxe_filter] supported_inspect_interfaces default is
    ['agent'], and it has no 'inspector' inspect interface any more."""
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    conf([], project='pxefilterd', default_config_files=[])
    assert conf.pxe_filter.supported_inspect_interfaces == ['agent']
    assert pxf_conf.policy_options(conf).supported_interfaces == {'agent'}
    # no reload command: a record for every port (sparse records need one)
    assert pxf_conf.policy_options(conf) == policy.Options(
        sparse_records=False)


def test_sparse_records_need_a_way_to_reload_dnsmasq():
    for option, value, sparse in (
            ('dnsmasq_reload_command', '', False),
            ('dnsmasq_reload_command', 'systemctl reload x', True),
            ('dnsmasq_child_command', 'dnsmasq --keep-in-foreground', True)):
        conf = cfg.ConfigOpts()
        pxf_conf.register_opts(conf)
        conf([], project='pxefilterd', default_config_files=[])
        conf.set_override(option, value, group='dnsmasq_pxe_filter')
        assert pxf_conf.policy_options(conf).sparse_records is sparse
