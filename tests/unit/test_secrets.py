"""The ironic credentials never leave pxefilterd.conf: not in a log line
(even with -v, which logs ironic requests), not in check-config's report,
status or explain."""

import io
import logging

from pxefilterd.cmd import ctl

SECRET = 'S3cret-Marker-7f1e'


def write_conf(tmp_path, hdir):
    conf = tmp_path / 'pxefilterd.conf'
    conf.write_text(
        '[DEFAULT]\nroot_helper =\ncontrol_socket = %s\n'
        '[dnsmasq_pxe_filter]\ndhcp_hostsdir = %s\n'
        'dnsmasq_start_command = true\ndnsmasq_stop_command = true\n'
        '[ironic]\nauth_type = password\nauth_url = http://127.0.0.1:9/v3\n'
        'username = pxefilterd\npassword = %s\nproject_name = service\n'
        'user_domain_name = Default\nproject_domain_name = Default\n'
        'timeout = 2\napi_retries = 0\n'
        % (tmp_path / 'no.sock', hdir, SECRET))
    return str(conf)


def test_no_command_shows_the_password(tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    hdir = tmp_path / 'hostsdir'
    hdir.mkdir()
    conf = write_conf(tmp_path, hdir)
    shown = []
    for argv in (['check-config'], ['status'],
                 ['explain', '52:54:00:00:00:01'], ['explain', 'unknown'],
                 ['sync', '--once', '--dry-run']):
        out = io.StringIO()
        ctl.main(['--config-file', conf, '-v'] + argv, out=out)
        captured = capsys.readouterr()
        shown += [out.getvalue(), captured.out, captured.err]
    shown += [r.getMessage() for r in caplog.records]
    assert any('127.0.0.1:9' in text for text in shown)   # it did try
    assert not [text for text in shown if SECRET in text]
