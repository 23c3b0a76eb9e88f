"""Bad configuration: one clear line per problem, naming option and value."""

from oslo_config import cfg
import pytest

from pxefilterd.cmd import daemon
from pxefilterd import conf as pxf_conf
from pxefilterd.conf import opts

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
