"""pxefilterd in a keystone cloud: a real keystone, ironic behind it.

One stack per module (and per xdist worker that runs a test of it:
keystone takes ~15 s to initialise): a real keystone from PyPI serving
HTTPS, and a real ironic with ``auth_strategy = keystone`` serving HTTPS,
each with a certificate from its own throw-away CA (so that a test can
trust one and not the other).  The catalog's baremetal service has a
*public* endpoint only.  ironic and
pxefilterd are users with the ``service`` role in project ``service``;
ironic runs with ``rbac_service_role_elevated_access`` so that such a user
reads every node and port.

pxefilterd's ``[ironic]`` group is what an operator writes for a keystone
cloud: ``auth_type = password`` and its options, ``cafile``, and neither
``endpoint_override`` nor ``valid_interfaces`` (default
``internal,public``: the missing internal endpoint is skipped).
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from oslo_config import cfg
from pxefilterd import conf as pxf_conf
from pxefilterd_harness import preflight, tls
from pxefilterd_harness.ironic import IronicService
from pxefilterd_harness.keystone import KeystoneService, ironic_auth_conf
from tests.integration.verdicts import UNKNOWN, eventually, mac

SERVICE_PROJECT = 'service'
IRONIC_USER, IRONIC_PASSWORD = 'ironic', 'ironic-secret'
PXF_USER, PXF_PASSWORD = 'pxefilterd', 'pxefilterd-secret'
FIRST_SYNC_FAILED = 'First sync failed, dnsmasq not started'


@dataclass
class Stack:
    keystone: KeystoneService
    ironic: IronicService
    keystone_ca: Path     # trusted for keystone only
    bundle: Path          # both CAs: what the operator configures


@pytest.fixture(scope='module')
def stack():
    for problem in (preflight.keystone_problem(),
                    preflight.ironic_problem()):
        if problem:
            pytest.skip(problem)
    workdir = Path(tempfile.mkdtemp(prefix='pxf-ks-'))
    os.chmod(workdir, 0o755)
    ks_tls = tls.make_ca(workdir / 'keystone-ca',
                         common_name='pxefilterd test keystone CA')
    ir_tls = tls.make_ca(workdir / 'ironic-ca',
                         common_name='pxefilterd test ironic CA')
    bundle = workdir / 'ca-bundle.pem'
    bundle.write_bytes(ks_tls.ca_cert.read_bytes()
                       + ir_tls.ca_cert.read_bytes())
    # Both URLs are known (ports reserved) before anything runs.
    keystone = KeystoneService(workdir / 'keystone', tls=ks_tls)
    ironic = IronicService(
        workdir / 'ironic', scheme='https',
        ssl_context=tls.client_context(ir_tls.ca_cert),
        extra_conf=ironic_auth_conf(keystone, IRONIC_USER, IRONIC_PASSWORD,
                                    tls=ir_tls))
    try:
        # the two databases are independent: made at the same time
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for step in [pool.submit(keystone.prepare),
                         pool.submit(ironic.prepare)]:
                step.result()
        keystone.start()
        for user, password in ((IRONIC_USER, IRONIC_PASSWORD),
                               (PXF_USER, PXF_PASSWORD)):
            keystone.add_user(user, password, project=SERVICE_PROJECT,
                              roles=('service',))
        keystone.register_service('baremetal', 'ironic',
                                  {'public': ironic.url})
        # the harness drives ironic as keystone's system admin
        ironic.headers['X-Auth-Token'] = keystone.admin_token()
        ironic.start()
        yield Stack(keystone, ironic, ks_tls.ca_cert, bundle)
    finally:
        ironic.close()
        keystone.close()
        shutil.rmtree(workdir, ignore_errors=True)


def keystone_runner(runner_factory, stack, **ironic_options):
    """A pxefilterd runner configured for the keystone cloud (not started).

    ``[ironic]`` has password auth, the region, and *ironic_options*;
    the runner's default ``endpoint_override`` is taken out of the file.
    """
    ks = stack.keystone
    options = {'auth_type': 'password', 'auth_url': ks.auth_url,
               'username': PXF_USER, 'password': PXF_PASSWORD,
               'project_name': SERVICE_PROJECT,
               'user_domain_name': 'Default',
               'project_domain_name': 'Default',
               'region_name': ks.region}
    options.update(ironic_options)
    groups = {'ironic': options}
    runner = runner_factory(options=groups, url=stack.ironic.url)
    lines = runner.conf_path.read_text().splitlines(keepends=True)
    text = ''.join(line for line in lines
                   if not line.startswith('endpoint_override ='))
    runner.conf_path.write_text(text)
    assert stack.ironic.url not in text
    assert 'valid_interfaces' not in text
    return runner


def effective_ironic_group(conf_path):
    """The ``[ironic]`` group as pxefilterd parses *conf_path*."""
    conf = cfg.ConfigOpts()
    pxf_conf.register_opts(conf)
    conf(['--config-file', str(conf_path)], project='pxefilterd',
         default_config_files=[], default_config_dirs=[])
    return conf.ironic


def enroll(ironic, first, count):
    """Enroll manageable nodes ``first..first+count-1``, one port each;
    return ``[(uuid, mac)]``."""
    nodes = []
    for i in range(first, first + count):
        uuid = ironic.create_node('ks-node-%d' % i)
        ironic.create_port(uuid, mac(i))
        nodes.append((uuid, mac(i)))
    return nodes


def test_password_auth_and_catalog(stack, runner_factory, probe):
    ks, ironic = stack.keystone, stack.ironic
    # The catalog pxefilterd gets: baremetal has a public endpoint only.
    token = ks.token(PXF_USER, PXF_PASSWORD, project=SERVICE_PROJECT)
    baremetal = [s for s in ks.catalog(token) if s['type'] == 'baremetal']
    assert [(e['interface'], e['url']) for e in baremetal[0]['endpoints']] \
        == [('public', ironic.url)]

    (a, a_mac), (_, b_mac) = enroll(ironic, 0, 2)
    runner = keystone_runner(runner_factory, stack, cafile=stack.bundle)
    # What pxefilterd reads: no endpoint_override, and the default
    # interfaces, internal first (the catalog has none: public is used).
    group = effective_ironic_group(runner.conf_path)
    assert group.endpoint_override is None
    assert group.valid_interfaces == ['internal', 'public']
    runner.start()
    runner.wait_ready()
    ironic.inspect(a)
    eventually(probe, allowed=[a_mac, UNKNOWN], denied=[b_mac])
    assert runner.stop() == 0


def never_ready(runner):
    """Start *runner*, wait until its first sync failed twice, check that
    it did not become ready nor start dnsmasq, stop it; return the log."""
    runner.start()
    runner.wait_for_log(FIRST_SYNC_FAILED, timeout=30, count=2)
    log = runner.log_text()
    assert 'Ready:' not in log
    assert not runner.dnsmasq.is_running()
    assert runner.stop() == 0
    return log


def test_tls_verified_with_cafile(stack, runner_factory, probe):
    ks, ironic = stack.keystone, stack.ironic
    ((node, node_mac),) = enroll(ironic, 2, 1)
    ironic.inspect(node)

    # Trusting only the system CAs: keystone itself is refused.
    log = never_ready(keystone_runner(runner_factory, stack))
    failures = [line for line in log.splitlines()
                if FIRST_SYNC_FAILED in line]
    assert all('CERTIFICATE_VERIFY_FAILED' in line and ks.url in line
               for line in failures), failures

    # Trusting keystone's CA only: authenticated, but ironic (endpoint from
    # the catalog) is refused: its certificate is verified too.
    log = never_ready(keystone_runner(runner_factory, stack,
                                      cafile=stack.keystone_ca))
    # (ironic's URL is not in pxefilterd's configuration: only the catalog
    # of an authenticated token names it; pxefilterd's own error line says
    # what openstacksdk's discovery error hides)
    failures = [line for line in log.splitlines()
                if FIRST_SYNC_FAILED in line]
    assert failures and all('CERTIFICATE_VERIFY_FAILED' in line
                            and ironic.url in line
                            for line in failures), failures

    # Both CAs: ready, and the node being inspected may boot.
    runner = keystone_runner(runner_factory, stack, cafile=stack.bundle)
    runner.start()
    runner.wait_ready()
    eventually(probe, allowed=[node_mac, UNKNOWN], denied=[])
    assert runner.stop() == 0
