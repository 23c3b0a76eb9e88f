"""A fake of ironic's bare metal API on 127.0.0.1, for unit and functional
tests.

It behaves like ironic 39 where pxefilterd depends on it, and
``tests/integration/test_fake_contract.py`` sends the same requests to this
fake and to a real ironic and compares the answers, so that it cannot
drift:

- collections are capped at ``max_limit`` per page; a full page carries a
  ``next`` link (the request's own query plus ``marker`` = the last item's
  UUID), so a collection of exactly ``limit`` items ends with an empty page;
- ``sort_key`` (``id``, ``created_at``, ``updated_at``, ``address``,
  ``uuid``...) and ``sort_dir``; NULLs sort first ascending, last
  descending (SQLite); ties are broken by id.  (Real ironic repeats items
  when a page's marker has a NULL sort value -- oslo.db pagination; the
  fake does not mimic that, and pxefilterd never pages past a NULL);
- ``fields`` (with the version each field needs: 406 "Request not
  acceptable." below it), and the default fields without it;
  ``node_uuid``/``node`` filters (404 "Node X could not be found." for a
  node that does not exist); ``provision_state`` filter;
- a marker that does not exist: 404 "Port X could not be found.";
- error bodies as ironic's: ``{"error_message": "<JSON string with
  faultcode, faultstring, debuginfo>"}``;
- microversions: a version above ``max_version`` gets 406; below 1.39,
  ``inspect wait`` is shown as ``inspecting``.

It can also misbehave on demand: ``mode`` is one of ``ok``, ``500``,
``badjson``, ``missing`` (documents without their list), ``slow`` (answers
after ``delay`` seconds) or ``garbage`` (entries of the wrong type mixed
with good ones).
"""

import datetime
import http.server
import itertools
import json
import re
import threading
import time
import urllib.parse
import uuid as uuid_mod

#: Fields a listing may ask for, with the API version each needs.
PORT_FIELDS = {'uuid': 1, 'address': 1, 'node_uuid': 1, 'extra': 1,
               'local_link_connection': 19, 'pxe_enabled': 19,
               'internal_info': 18, 'portgroup_uuid': 24,
               'physical_network': 34, 'created_at': 1, 'updated_at': 1}
NODE_FIELDS = {'uuid': 1, 'name': 5, 'instance_uuid': 1, 'power_state': 1,
               'maintenance': 1, 'provision_state': 1,
               'provision_updated_at': 1, 'inspect_interface': 31,
               'conductor_group': 46, 'shard': 82}
#: What a listing without ``fields`` returns.
DEFAULT_FIELDS = {'ports': ['uuid', 'address'],
                  'nodes': ['instance_uuid', 'maintenance', 'power_state',
                            'provision_state', 'uuid', 'name']}
_SORT_INVALID = {'ports': ('extra', 'internal_info', 'local_link_connection'),
                 'nodes': ('properties', 'driver_info', 'extra',
                           'instance_info', 'driver_internal_info')}
#: Timestamps ironic keeps but will not list as node fields.
_NOT_NODE_FIELDS = ('created_at', 'updated_at')
# The address filter takes colon-separated MACs, any case.
_MAC_RE = re.compile(r'[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}')
_STATES = ('enroll', 'manageable', 'available', 'active', 'inspecting',
           'inspect wait', 'inspect failed', 'cleaning', 'clean wait',
           'deploying', 'wait call-back', 'error')


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _stamp(value):
    return value.isoformat() if value is not None else None


def _fault(message):
    return {'error_message': json.dumps({'faultcode': 'Client',
                                         'faultstring': message,
                                         'debuginfo': None})}


class FakeIronic:
    def __init__(self, max_limit=1000, max_version=(1, 115)):
        self.max_limit = max_limit
        self.max_version = max_version
        self.ports = {}        # uuid -> record dict
        self.nodes = {}        # uuid -> record dict
        self.mode = 'ok'
        self.delay = 0.0
        self.padding = 0       # spaces added to every API answer
        self.stopping = threading.Event()
        self.requests = []     # (path, query)
        self.versions = []     # the microversion of each request
        self.failures = 0      # the next N API requests answer 500
        self.unavailable = 0   # the next N API requests answer 503
        self.broken = set()    # 'ports' / 'nodes': always 500
        self.listing_gate = None   # full port listings wait for this Event
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        self._server = http.server.ThreadingHTTPServer(
            ('127.0.0.1', 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        daemon=True)

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self._server.server_address[1]

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    # -- the data, as a test changes it -------------------------------------

    def add_node(self, provision_state='manageable', inspect_interface='agent',
                 uuid=None, **fields):
        """Create a node; return its UUID."""
        uuid = uuid or str(uuid_mod.uuid4())
        record = dict(name=None, instance_uuid=None, power_state=None,
                      maintenance=False, conductor_group='', shard=None,
                      provision_updated_at=None)
        record.update(fields, uuid=uuid, provision_state=provision_state,
                      inspect_interface=inspect_interface, created_at=_now(),
                      updated_at=None)
        with self.lock:
            record['id'] = next(self._ids)
            self.nodes[uuid] = record
        return uuid

    def set_node(self, uuid, **fields):
        """Change node fields (``provision_state=...``): an update."""
        with self.lock:
            self.nodes[uuid].update(fields, updated_at=_now())

    def delete_node(self, uuid):
        """Delete a node and its ports."""
        with self.lock:
            del self.nodes[uuid]
            for port in [p for p, r in self.ports.items()
                         if r['node_uuid'] == uuid]:
                del self.ports[port]

    def add_port(self, node, address, uuid=None, extra=None):
        """Create a port on ``node`` (a UUID, or None); return its UUID."""
        uuid = uuid or str(uuid_mod.uuid4())
        with self.lock:
            self.ports[uuid] = dict(
                id=next(self._ids), uuid=uuid, address=address,
                node_uuid=node, created_at=_now(), updated_at=None,
                extra=dict(extra or {}), local_link_connection={},
                internal_info={},
                pxe_enabled=True, portgroup_uuid=None, physical_network=None)
        return uuid

    def set_port(self, uuid, **fields):
        """Change port fields (``address=``, ``node_uuid=``): an update."""
        with self.lock:
            self.ports[uuid].update(fields, updated_at=_now())

    def delete_port(self, uuid):
        with self.lock:
            del self.ports[uuid]

    def port_map(self):
        """``{mac: node}`` of every port (what pxefilterd should know)."""
        with self.lock:
            return {r['address']: r['node_uuid'] for r in self.ports.values()}

    # -- HTTP --------------------------------------------------------------

    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def do_GET(self):
                split = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(split.query))
                fake.requests.append((split.path, query))
                version = self.headers.get('X-OpenStack-Ironic-API-Version')
                fake.versions.append(version)
                status, body = fake.hooks(split.path.rstrip('/'), query)
                if status is None:
                    status, body = fake.answer(split.path.rstrip('/'), query,
                                               version)
                    fake.hold(split.path.rstrip('/'), query)
                if fake.mode == 'slow' and split.path.startswith('/v1/'):
                    time.sleep(fake.delay)
                data = body if isinstance(body, bytes) else \
                    json.dumps(body).encode()
                if split.path.startswith('/v1/'):
                    data += b' ' * fake.padding
                if (fake.mode == 'trickle-headers'
                        and split.path.startswith('/v1/')):
                    # the status line and headers, one byte every `delay`
                    head = ('HTTP/1.1 %d OK\r\nContent-Type: application/json'
                            '\r\nX-Padding: %s\r\nContent-Length: %d\r\n'
                            '\r\n' % (status, 'x' * 1000, len(data))).encode()
                    for i in range(len(head)):
                        try:
                            self.wfile.write(head[i:i + 1])
                            self.wfile.flush()
                        except OSError:
                            return      # the client gave up
                        if fake.stopping.wait(fake.delay):
                            return
                    self.wfile.write(data)
                    return
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                if fake.mode == 'trickle' and split.path.startswith('/v1/'):
                    # one byte every `delay` seconds: each read is quick
                    for i in range(len(data)):
                        try:
                            self.wfile.write(data[i:i + 1])
                            self.wfile.flush()
                        except OSError:
                            return      # the client gave up
                        if fake.stopping.wait(fake.delay):
                            return
                    return
                self.wfile.write(data)

        return Handler

    def hooks(self, path, query):
        """Return ``(None, None)``, or a forced failure."""
        if not path.startswith('/v1/'):
            return None, None
        with self.lock:
            if path[4:] in self.broken:
                return 500, _fault('%s are broken (fake)' % path[4:])
            if self.failures:
                self.failures -= 1
                return 500, _fault('ironic is down (fake)')
            if self.unavailable:
                self.unavailable -= 1
                return 503, _fault('ironic is overloaded (fake)')
        return None, None

    def hold(self, path, query):
        """A full port listing's page waits for :attr:`listing_gate`
        *after* it was read: its answer ages meanwhile."""
        gate = self.listing_gate
        if (gate is not None and path == '/v1/ports'
                and not {'sort_key', 'node_uuid', 'node'} & set(query)):
            assert gate.wait(timeout=30), 'listing gate never opened'

    def client(self, timeout=2.0, retries=0, page_size=1000, shard=(),
               conductor_group=()):
        """Return a :class:`pxefilterd.ironic.IronicClient` for this fake,
        built from an ``[ironic]`` group as the daemon builds it (and
        ``[pxe_filter] shard / conductor_group``)."""
        from oslo_config import cfg

        from pxefilterd import conf as pxf_conf
        from pxefilterd import ironic

        conf = cfg.ConfigOpts()
        pxf_conf.register_opts(conf)
        conf([], project='pxefilterd', default_config_files=[])
        for name, value in (('auth_type', 'none'),
                            ('endpoint_override', self.url),
                            ('timeout', timeout), ('api_retries', retries),
                            ('api_retry_interval', 0.01),
                            ('page_size', page_size)):
            conf.set_override(name, value, group='ironic')
        conf.set_override('shard', list(shard), group='pxe_filter')
        conf.set_override('conductor_group', list(conductor_group),
                          group='pxe_filter')
        return ironic.IronicClient.from_conf(conf)

    def _version_doc(self):
        return {'id': 'v1', 'status': 'CURRENT', 'min_version': '1.1',
                'version': '%d.%d' % self.max_version,
                'links': [{'href': self.url + '/v1/', 'rel': 'self'}]}

    def answer(self, path, query, version=None):
        """Return ``(status, body)`` for a GET of ``path?query``."""
        if path == '':
            return 200, {'versions': [self._version_doc()],
                         'default_version': self._version_doc()}
        if path == '/v1':
            return 200, {'id': 'v1', 'version': self._version_doc(),
                         'links': [{'href': self.url + '/v1/',
                                    'rel': 'self'}]}
        minor = 1
        if version and version != 'latest':
            minor = int(version.split('.')[1])
            if (1, minor) > self.max_version:
                return 406, {'error_message': json.dumps({
                    'code': 406, 'title': 'Not Acceptable',
                    'description': 'Version %s was requested but the minor '
                    'version is not supported by this service. The '
                    'supported version range is: [1.1, %d.%d].'
                    % ((version,) + self.max_version)})}
        elif version == 'latest':
            minor = self.max_version[1]
        if fake_error := self._misbehave(path):
            return fake_error
        kinds = {'/v1/ports': ('ports', self._port_items),
                 '/v1/nodes': ('nodes', self._node_items)}
        if path not in kinds:
            return 404, {'error_message': 'The resource could not be found.'}
        kind, items = kinds[path]
        with self.lock:
            try:
                return 200, self._page(kind, items(query), query, minor)
            except _Fault as fault:
                return fault.status, _fault(fault.message)

    def _misbehave(self, path):
        if self.mode == '500':
            return 500, _fault('internal error (fake)')
        if self.mode == 'badjson':
            return 200, b'{"ports": [ {"address": '
        if self.mode == 'missing':
            return 200, {'something': 'else'}
        return None

    def _port_items(self, query):
        node = query.get('node_uuid') or query.get('node')
        if node and node not in self.nodes:
            raise _Fault(404, 'Node %s could not be found.' % node)
        address = query.get('address')
        if address is not None:
            if not _MAC_RE.fullmatch(address):
                raise _Fault(400, 'Expected valid MAC address for address: '
                                  '%s' % address)
            address = address.lower()
        return [r for r in self.ports.values()
                if (not node or r['node_uuid'] == node)
                and (address is None or r['address'] == address)]

    def _node_items(self, query):
        state = query.get('provision_state')
        if state is not None and state not in _STATES:
            raise _Fault(400, 'Provision state "%s" is not valid' % state)
        return [r for r in self.nodes.values()
                if state is None or r['provision_state'] == state]

    def _page(self, kind, items, query, minor):
        sort_key = query.get('sort_key', 'id')
        sort_dir = query.get('sort_dir', 'asc')
        known = PORT_FIELDS if kind == 'ports' else NODE_FIELDS
        if sort_key in _SORT_INVALID[kind]:
            raise _Fault(400, 'The sort_key value %s is an invalid field '
                              'for sorting' % sort_key)
        if sort_key != 'id' and sort_key not in known and not (
                kind == 'nodes' and sort_key in _NOT_NODE_FIELDS):
            raise _Fault(400, 'The sort_key value "%s" is an invalid field '
                              'for sorting' % sort_key)
        if sort_dir not in ('asc', 'desc'):
            raise _Fault(400, 'Invalid sort direction: %s. Acceptable '
                              'values are \'asc\' or \'desc\'' % sort_dir)
        fields = query.get('fields')
        wanted = fields.split(',') if fields else DEFAULT_FIELDS[kind]
        for name in wanted:
            if kind == 'nodes' and name in _NOT_NODE_FIELDS:
                raise _Fault(400, 'Field %s is not a valid field.' % name)
            if name not in known:
                raise _Fault(400, 'Field(s) "%s" are not valid' % name)
            if known[name] > minor:
                raise _Fault(406, 'Request not acceptable.')
        limit = int(query.get('limit') or self.max_limit)
        if limit <= 0:
            raise _Fault(400, 'Limit must be positive')
        limit = min(limit, self.max_limit)
        desc = sort_dir == 'desc'

        def key(record):
            value = record.get(sort_key)
            # (SQLite) NULL is the smallest value: first asc, last desc
            return (value is not None, value if value is not None else 0,
                    record['id'])

        items = sorted(items, key=key, reverse=desc)
        marker = query.get('marker')
        if marker:
            records = self.ports if kind == 'ports' else self.nodes
            if marker not in records:
                raise _Fault(404, '%s %s could not be found.'
                             % (kind[:-1].capitalize(), marker))
            mkey = key(records[marker])
            # SQL: NULL compares to nothing, so after a marker with a value
            # no NULL row comes back (real ironic).
            items = [r for r in items
                     if (key(r) < mkey if desc else key(r) > mkey)
                     and (r.get(sort_key) is not None or not mkey[0])]
        page = items[:limit]
        body = {kind: [self._render(kind, r, wanted, minor) for r in page]}
        if self.mode == 'garbage':
            body[kind] += self._garbage(kind)
        if len(page) == limit:
            next_query = {'sort_key': sort_key, 'sort_dir': sort_dir,
                          'fields': ','.join(wanted), 'limit': str(limit),
                          'marker': page[-1]['uuid']}
            next_query.update((k, v) for k, v in query.items()
                              if k not in next_query)
            body['next'] = '%s/v1/%s?%s' % (
                self.url, kind, urllib.parse.urlencode(next_query,
                                                       safe=','))
        return body

    def _render(self, kind, record, wanted, minor):
        entry = {}
        for name in wanted:
            value = record.get(name)
            if isinstance(value, datetime.datetime):
                value = _stamp(value)
            if (name == 'provision_state' and value == 'inspect wait'
                    and minor < 39):
                value = 'inspecting'
            entry[name] = value
        entry['links'] = [
            {'href': '%s/v1/%s/%s' % (self.url, kind, record['uuid']),
             'rel': 'self'},
            {'href': '%s/%s/%s' % (self.url, kind, record['uuid']),
             'rel': 'bookmark'}]
        return entry

    @staticmethod
    def _garbage(kind):
        if kind == 'nodes':
            return [{'provision_state': 'inspect wait'}, 'junk', {'uuid': 5}]
        return [{'address': 'not-a-mac', 'node_uuid': 'x',
                 'uuid': str(uuid_mod.uuid4())},
                {'address': None}, 'junk', {'node_uuid': 'y'},
                {'address': '52:54:00:12:34:56,set:x',
                 'uuid': str(uuid_mod.uuid4())},
                {'address': '52:54:00:de:ad:01', 'node_uuid': 7,
                 'uuid': str(uuid_mod.uuid4())}]


class _Fault(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message
