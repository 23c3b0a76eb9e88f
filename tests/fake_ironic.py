"""A small fake of ironic's API on 127.0.0.1, for functional tests.

Serves what pxefilterd reads (version documents, /v1/ports with fields,
limit, marker and node_uuid, /v1/nodes with provision_state) from plain
Python data, and can misbehave on demand: ``mode`` is one of ``ok``,
``500``, ``badjson``, ``missing`` (documents without their list), ``slow``
(answers after ``delay`` seconds) or ``garbage`` (entries of the wrong type
mixed with good ones).  The integration tests use a real ironic instead.
"""

import http.server
import json
import threading
import time
import urllib.parse


class FakeIronic:
    def __init__(self):
        self.ports = {}        # mac -> node uuid
        self.nodes = {}        # uuid -> (provision_state, inspect_interface)
        self.mode = 'ok'
        self.delay = 0.0
        self.requests = []
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
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                split = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(split.query))
                fake.requests.append((split.path, query))
                status, body = fake.answer(split.path.rstrip('/'), query)
                if fake.mode == 'slow' and split.path.startswith('/v1/'):
                    time.sleep(fake.delay)
                data = body if isinstance(body, bytes) else \
                    json.dumps(body).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def _version(self):
        return {'id': 'v1', 'status': 'CURRENT', 'min_version': '1.1',
                'version': '1.99',
                'links': [{'href': self.url + '/v1/', 'rel': 'self'}]}

    def answer(self, path, query):
        if path == '':
            return 200, {'versions': [self._version()],
                         'default_version': self._version()}
        if path == '/v1':
            return 200, {'id': 'v1', 'version': self._version(),
                         'links': [{'href': self.url + '/v1/',
                                    'rel': 'self'}]}
        if fake_error := self._misbehave(path):
            return fake_error
        if path == '/v1/ports':
            return 200, self._ports(query)
        if path == '/v1/nodes':
            state = query.get('provision_state')
            nodes = [{'uuid': u, 'provision_state': s,
                      'inspect_interface': i}
                     for u, (s, i) in sorted(self.nodes.items())
                     if state is None or s == state]
            if self.mode == 'garbage':
                nodes += [{'provision_state': state}, 'junk', {'uuid': 5}]
            return 200, {'nodes': nodes}
        return 404, {'error_message': 'not found'}

    def _misbehave(self, path):
        if self.mode == '500':
            return 500, {'error_message': 'internal error (fake)'}
        if self.mode == 'badjson':
            return 200, b'{"ports": [ {"address": '
        if self.mode == 'missing':
            return 200, {'something': 'else'}
        return None

    def _ports(self, query):
        items = sorted(self.ports.items())
        node = query.get('node_uuid')
        if node:
            items = [i for i in items if i[1] == node]
        marker = query.get('marker')
        if marker:
            items = [i for i in items if i[0] > marker]
        limit = int(query.get('limit', 1000))
        page = items[:limit]
        ports = [{'address': m, 'node_uuid': n, 'uuid': m} for m, n in page]
        if self.mode == 'garbage':
            ports += [{'address': 'not-a-mac', 'node_uuid': 'x'},
                      {'address': None}, 'junk', {'node_uuid': 'y'},
                      {'address': '52:54:00:12:34:56,set:x'},
                      {'address': '52:54:00:de:ad:01', 'node_uuid': 7}]
        body = {'ports': ports}
        if len(items) > limit:
            body['next'] = '%s/v1/ports?limit=%d&marker=%s' % (
                self.url, limit, urllib.parse.quote(page[-1][0]))
        return body
