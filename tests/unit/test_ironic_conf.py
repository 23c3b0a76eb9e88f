"""Every registered [ironic] option reaches the connection to ironic."""

import pytest
from oslo_config import cfg

from pxefilterd import checks
from pxefilterd import conf as pxf_conf
from pxefilterd import ironic
from tests.fake_ironic import FakeIronic


def make_conf(**options):
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    conf([], project='pxefilterd', default_config_files=[])
    options.setdefault('auth_type', 'none')
    options.setdefault('endpoint_override', 'http://127.0.0.1:9')
    for name, value in options.items():
        conf.set_override(name, value, group='ironic')
    return conf


def baremetal(conn):
    """The baremetal settings openstacksdk will build its adapter from."""
    return {k[len('baremetal_'):]: v for k, v in conn.config.config.items()
            if k.startswith('baremetal_')}


@pytest.mark.parametrize('name, value, key, expected', [
    ('endpoint_override', 'http://198.51.100.7:6385', 'endpoint_override',
     'http://198.51.100.7:6385'),
    ('region_name', 'RegionTwo', 'region_name', 'RegionTwo'),
    ('service_name', 'ironic-b', 'service_name', 'ironic-b'),
    ('valid_interfaces', ['internal', 'public'], 'interface',
     ['internal', 'public']),
    ('valid_interfaces', ['admin'], 'interface', ['admin']),
    ('version', '1', 'version', '1'),
    ('min_version', '1.39', 'min_version', '1.39'),
    ('max_version', '1.99', 'max_version', '1.99'),
    ('connect_retries', 4, 'connect_retries', '4'),
    ('connect_retry_delay', 0.5, 'connect_retry_delay', '0.5'),
    ('status_code_retries', 2, 'status_code_retries', '2'),
    ('status_code_retry_delay', 1.5, 'status_code_retry_delay', '1.5'),
    ('retriable_status_codes', [502, 503], 'retriable_status_codes',
     [502, 503]),
])
def test_adapter_options_reach_openstacksdk(name, value, key, expected):
    settings = baremetal(ironic.connect(make_conf(**{name: value})))
    got = settings[key]
    if isinstance(expected, list) and isinstance(got, list):
        got = [type(e)(g) for e, g in zip(expected, got)]
    assert got == expected
    assert settings['service_type'] == 'baremetal'


def test_the_interfaces_default_to_internal_then_public():
    assert baremetal(ironic.connect(make_conf()))['interface'] == [
        'internal', 'public']


def test_session_options_reach_keystoneauth(tmp_path):
    ca = tmp_path / 'ca.pem'
    ca.write_text('not checked until a TLS request\n')
    conn = ironic.connect(make_conf(timeout=7, cafile=str(ca)))
    assert conn.session.timeout == 7
    assert conn.session.verify == str(ca)
    conn = ironic.connect(make_conf(insecure=True))
    assert conn.session.verify is False


def test_password_auth_options_reach_the_plugin(tmp_path):
    path = tmp_path / 'pxefilterd.conf'
    path.write_text('[ironic]\nauth_type = password\n'
                    'auth_url = http://198.51.100.5:5000/v3\n'
                    'username = pxefilterd\npassword = secret\n'
                    'project_name = service\nuser_domain_name = Default\n'
                    'project_domain_name = Default\n')
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    conf(['--config-file', str(path)], project='pxefilterd')
    auth = ironic.connect(conf).session.auth
    assert type(auth).__name__ == 'Password'
    assert auth.auth_url == 'http://198.51.100.5:5000/v3'
    assert auth._username == 'pxefilterd'
    assert auth._project_name == 'service'


def test_contradictory_adapter_options_are_a_clear_error():
    with pytest.raises(ValueError, match='mutually exclusive'):
        ironic.connect(make_conf(version='1', max_version='1.80'))


def test_a_max_version_below_what_pxefilterd_needs_is_a_config_error(
        tmp_path):
    conf = make_conf(max_version='1.38')
    conf.set_override('dhcp_hostsdir', str(tmp_path),
                      group='dnsmasq_pxe_filter')
    problems = checks.check(conf)
    assert any('[ironic] max_version = 1.38' in p and '1.39' in p
               for p in problems), problems


@pytest.fixture
def fake():
    f = FakeIronic().start()
    yield f
    f.stop()


def test_status_code_retries_are_keystoneauths_on_top_of_api_retries(fake):
    """A 503 is retried by keystoneauth (status_code_retries) before
    pxefilterd's own retries (api_retries, here none) see it."""
    fake.add_node(provision_state='inspect wait')
    fake.unavailable = 2
    client = ironic.IronicClient.from_conf(make_conf(
        endpoint_override=fake.url, status_code_retries=2,
        status_code_retry_delay=0.01, api_retries=0, timeout=2))
    assert len(client.inspection_nodes({'inspect wait'})) == 1
    fake.unavailable = 1
    client = ironic.IronicClient.from_conf(make_conf(
        endpoint_override=fake.url, status_code_retries=0, api_retries=0,
        timeout=2))
    with pytest.raises(ironic.ApiError, match='503'):
        client.inspection_nodes({'inspect wait'})


@pytest.mark.parametrize('pool', ['_HTTPPool', '_HTTPSPool'])
def test_the_deadline_timer_knows_the_connection_of_its_request(pool):
    """Both pool kinds (plain and TLS) tell the timer which connection the
    request took, so that the deadline can cut it."""
    timer = ironic.deadline_timer(3600)
    try:
        conn = getattr(ironic, pool)('127.0.0.1', 9)._get_conn()
        taken = ironic._TAKEN.taken
        assert taken.conn is conn
    finally:
        timer.cancel()
        ironic._TAKEN.taken = None
