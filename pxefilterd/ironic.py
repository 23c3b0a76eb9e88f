"""Reading ports and nodes from ironic, and validating what comes back.

Requests go through an openstacksdk connection (keystoneauth session: a
keystone cloud and a standalone ``auth_type = none`` ironic both work), but
responses are read as raw JSON: building SDK resource objects costs about
four times the server's own time at 10k ports.  Every entry is validated;
a bad entry is skipped and logged, the rest is used.  A response that is not
the expected JSON document at all fails the whole request (and is retried).
"""

import logging
import sys
import threading
import urllib.parse

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
import openstack.connection
import openstack.exceptions
import tenacity

from pxefilterd import macs
from pxefilterd.policy import Snapshot

LOG = logging.getLogger(__name__)

# fields= needs 1.8; the inspect_interface node field needs 1.31.
MICROVERSION = '1.31'
INSPECTION_STATES = ('inspect wait', 'inspecting')
_MAX_PAGES = 100000


class ApiError(Exception):
    """ironic could not be asked, or answered something unusable."""


def connect(conf):
    """Return an openstacksdk Connection built from the ``[ironic]`` group."""
    group = conf.ironic
    auth = ks_loading.load_auth_from_conf_options(conf, 'ironic')
    session = ks_loading.load_session_from_conf_options(conf, 'ironic',
                                                        auth=auth)
    kwargs = {'session': session}
    if group.endpoint_override:
        kwargs['baremetal_endpoint_override'] = group.endpoint_override
    if group.region_name:
        kwargs['region_name'] = group.region_name
    if group.valid_interfaces:
        kwargs['baremetal_interface'] = group.valid_interfaces[0]
    return openstack.connection.Connection(**kwargs)


def parse_ports(body, skipped):
    """Yield ``(mac, node_uuid)`` from one ``/v1/ports`` page.

    Invalid entries are logged, counted in ``skipped`` (a list) and left out.

    :raises ApiError: the document has no ``ports`` list.
    """
    ports = body.get('ports') if isinstance(body, dict) else None
    if not isinstance(ports, list):
        raise ApiError('port listing has no "ports" list')
    for entry in ports:
        if not isinstance(entry, dict):
            skipped.append(entry)
            LOG.warning('Skipping a port entry that is not an object: %.100r',
                        entry)
            continue
        mac = macs.normalize_mac(entry.get('address'))
        node = entry.get('node_uuid')
        if mac is None:
            skipped.append(entry)
            LOG.warning('Skipping a port with an invalid MAC address: %.100r',
                        entry.get('address'))
            continue
        if node is not None and not isinstance(node, str):
            skipped.append(entry)
            LOG.warning('Skipping port %s: node_uuid is not a string: %.100r',
                        mac, node)
            continue
        # Interned: 100k ports share ~1k node UUIDs, and the MAC strings
        # of every sync are the same objects as the index's keys.
        yield sys.intern(mac), (sys.intern(node) if node is not None
                                else None)


def parse_nodes(body, supported_interfaces, skipped):
    """Yield UUIDs of nodes whose in-band inspection needs PXE.

    :raises ApiError: the document has no ``nodes`` list.
    """
    nodes = body.get('nodes') if isinstance(body, dict) else None
    if not isinstance(nodes, list):
        raise ApiError('node listing has no "nodes" list')
    for entry in nodes:
        uuid = entry.get('uuid') if isinstance(entry, dict) else None
        if not isinstance(uuid, str) or not uuid:
            skipped.append(entry)
            LOG.warning('Skipping a node entry without a UUID: %.100r', entry)
            continue
        if entry.get('provision_state') not in INSPECTION_STATES:
            continue
        if entry.get('inspect_interface') in supported_interfaces:
            yield uuid


def merge_ports(pairs, skipped, result=None):
    """Add ``(mac, node)`` pairs to ``result`` (default: a new dict) and
    return it; for a MAC seen twice the first one wins."""
    if result is None:
        result = {}
    for mac, node in pairs:
        if mac in result:
            if result[mac] != node:
                skipped.append(mac)
                LOG.warning('MAC %s is on two nodes (%s, %s); keeping the '
                            'first', mac, result[mac], node)
            continue
        result[mac] = node
    return result


class IronicSource:
    """Fetches validated snapshots from ironic.

    Thread-safe: the service lists all ports in a background thread while
    its loop polls the nodes under inspection.
    """

    def __init__(self, conn, supported_interfaces=('agent', 'inspector'),
                 page_size=1000, retries=3, retry_interval=0.5):
        self._conn = conn
        self._api = None
        self.supported = frozenset(supported_interfaces)
        self.page_size = page_size
        self.retries = retries
        self.retry_interval = retry_interval
        self.requests = 0
        self.last_skipped = 0
        self._lock = threading.Lock()

    @classmethod
    def from_conf(cls, conf):
        return cls(connect(conf),
                   conf.pxe_filter.supported_inspect_interfaces,
                   conf.ironic.page_size, conf.ironic.api_retries,
                   conf.ironic.api_retry_interval)

    def _get(self, path, params):
        """GET ``path`` once; return the decoded JSON document."""
        try:
            with self._lock:
                self.requests += 1
                if self._api is None:
                    # Creating the proxy runs version discovery: a request.
                    self._api = self._conn.baremetal
            resp = self._api.get(path, params=params,
                                 microversion=MICROVERSION, raise_exc=False)
        except (ks_exc.ClientException,
                openstack.exceptions.SDKException) as exc:
            raise ApiError('GET %s failed: %s' % (path, exc)) from exc
        if resp.status_code != 200:
            raise ApiError('GET %s returned HTTP %d: %.200s'
                           % (path, resp.status_code, resp.text))
        try:
            return resp.json()
        except ValueError as exc:
            raise ApiError('GET %s returned invalid JSON: %s'
                           % (path, exc)) from exc

    def _retrying(self, func, *args):
        retryer = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(ApiError),
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.retry_interval,
                                           max=10),
            before_sleep=lambda rs: LOG.warning(
                'ironic request failed (attempt %d): %s; retrying',
                rs.attempt_number, rs.outcome.exception()),
            reraise=True)
        return retryer(func, *args)

    def _list_ports(self, params, skipped):
        """Return ``{mac: node}`` of every page of one port listing."""
        params = dict(params, fields='address,node_uuid',
                      limit=self.page_size)
        # Merged page by page: at 100k ports a list of pairs would add
        # ~6 MB to the daemon's peak memory.
        result = {}
        markers = set()
        for _ in range(_MAX_PAGES):
            body = self._get('/ports', params)
            merge_ports(parse_ports(body, skipped), skipped, result)
            marker = _next_marker(body)
            if marker is None:
                return result
            if marker in markers:
                raise ApiError('port listing loops at marker %s' % marker)
            markers.add(marker)
            params['marker'] = marker
        raise ApiError('port listing has more than %d pages' % _MAX_PAGES)

    def _inspecting(self, skipped):
        found = set()
        for state in INSPECTION_STATES:
            body = self._get('/nodes', {
                'provision_state': state,
                'fields': 'uuid,provision_state,inspect_interface'})
            found.update(parse_nodes(body, self.supported, skipped))
        return frozenset(found)

    def inspecting(self):
        """Return the UUIDs of nodes under in-band inspection.

        :raises ApiError: after the configured retries.
        """
        skipped = []
        return self._retrying(self._inspecting, skipped)

    def ports_of(self, nodes):
        """Return ``{mac: node}`` for the ports of the given nodes."""
        skipped = []
        result = {}
        for node in sorted(nodes):
            found = self._retrying(self._list_ports, {'node_uuid': node},
                                   skipped)
            merge_ports(found.items(), skipped, result)
        return result

    def ports(self):
        """Return ``{mac: node}`` for every port (all pages).

        :raises ApiError: after the configured retries.
        """
        skipped = []
        result = self._retrying(self._list_ports, {}, skipped)
        self.last_skipped = len(skipped)
        return result

    def snapshot(self):
        """Return a full :class:`Snapshot`: every port, inspected nodes.

        One port listing (all pages) and two small node requests.

        :raises ApiError: after the configured retries.
        """
        ports = self.ports()
        skipped = []
        inspecting = self._retrying(self._inspecting, skipped)
        self.last_skipped += len(skipped)
        return Snapshot(ports=ports, inspecting=inspecting)


def _next_marker(body):
    link = body.get('next')
    if not link:
        return None
    if not isinstance(link, str):
        raise ApiError('"next" link is not a string: %.100r' % (link,))
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
    marker = query.get('marker')
    if not marker:
        raise ApiError('"next" link has no marker: %.200s' % link)
    return marker[0]
