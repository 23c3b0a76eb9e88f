"""Asking ironic: requests, pages, microversions, and validating the answers.

Requests go through an openstacksdk connection (keystoneauth session: a
keystone cloud and a standalone ``auth_type = none`` ironic both work), but
responses are read as raw JSON: building SDK resource objects costs about
four times the server's own time at 10k ports.  Every entry is validated;
a bad entry is skipped and logged, the rest is used.  A response that is not
the expected JSON document at all fails the request (and is retried).
What ironic sends reaches logs, error messages and ``explain`` only once
validated (UUIDs, MACs, client ids, printable node fields) or as a
``repr`` (skipped entries, error bodies, markers): a value holding a newline
cannot forge a log line.

Facts about ironic this module relies on (ironic 39, measured):

* every collection is capped at ``[api] max_limit`` (1000) per response,
  with a ``next`` link whose ``marker`` is the last item's UUID; a marker
  that has been deleted meanwhile answers 404;
* ``GET /v1/ports?node_uuid=X`` for a node that does not exist answers 404
  ("Node X could not be found."): the node is gone, which is not an error;
* ``inspect wait`` is shown as ``inspecting`` below API 1.39.

Thread-safe: the service's poller and lister threads share one client.
"""

import datetime
import json
import logging
import re
import socket
import sys
import threading
import time
import urllib.parse

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
import openstack.connection
import openstack.exceptions
import tenacity
from urllib3 import connectionpool
import urllib3.exceptions

from pxefilterd import macs
from pxefilterd import policy
from pxefilterd import view

LOG = logging.getLogger(__name__)

#: The API version every request asks for, and why: fields= (1.8), the
#: provision_state filter (1.9), the inspect_interface field (1.31) and the
#: real name of the "inspect wait" state (1.39).
MICROVERSION = (1, 39)
MICROVERSION_WHY = "the 'inspect wait' provision state and inspect_interface"
#: Node fields a scoped filter asks for, and the API version each needs.
SCOPE_FIELDS = {'conductor_group': (1, 46), 'shard': (1, 82)}


def microversion_for(scope):
    """Return ``(version, why)`` for a client asking the node fields
    ``scope`` (a subset of :data:`SCOPE_FIELDS`) besides the usual ones."""
    version, why = MICROVERSION, MICROVERSION_WHY
    for field in sorted(scope):
        if SCOPE_FIELDS[field] > version:
            version = SCOPE_FIELDS[field]
            why = "the node field '%s' ([pxe_filter] %s)" % (field, field)
    return version, why
#: Most pages one listing may take (10M ports at 1000 a page): beyond that
#: the answer is treated as broken rather than followed forever.
MAX_PAGES = 10000
#: The port fields every listing asks for (``extra`` holds an InfiniBand
#: port's client id).
PORT_FIELDS = 'uuid,address,node_uuid,extra'
_UUID_RE = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                      r'[0-9a-f]{12}')


class ApiError(Exception):
    """ironic could not be asked, or answered something unusable."""


class VersionError(ApiError):
    """ironic does not speak the API version pxefilterd needs."""


class NotFound(ApiError):
    """ironic answered 404 for something it names in its answer."""


class NodeGone(NotFound):
    """The node does not exist (any more)."""

    def __init__(self, node, message):
        super().__init__(message)
        self.node = node


def connect(conf):
    """Return an openstacksdk Connection built from the whole ``[ironic]``
    group.

    keystoneauth reads the auth plugin and session options (``auth_type``
    and its options, ``cafile``, ``insecure``, ``certfile``, ``timeout``...)
    and openstacksdk the adapter options (``endpoint_override``,
    ``valid_interfaces`` tried in order, ``region_name``, ``service_name``,
    ``version``, ``min_version``/``max_version``, ``connect_retries``,
    ``status_code_retries``...), as every OpenStack service reads its
    ``[<service>]`` group.

    :raises ValueError: the adapter options cannot be combined (openstacksdk
        would otherwise only disable the service, and every request would
        fail with a vague error).
    """
    try:
        ks_loading.adapter.process_conf_options(conf.ironic, {})
    except TypeError as exc:
        raise ValueError('[ironic] %s' % exc) from exc
    auth = ks_loading.load_auth_from_conf_options(conf, 'ironic')
    session = ks_loading.load_session_from_conf_options(conf, 'ironic',
                                                        auth=auth)
    cut_at_deadline(session)
    return openstack.connection.Connection(
        session=session, oslo_conf=conf, service_types={'baremetal'},
        app_name='pxefilterd')


# -- the deadline of a request before its answer is read ----------------------
#
# requests (urllib3, http.client) bounds each socket read only, and reads the
# status line and headers itself: a server trickling them a byte at a time is
# never cut.  So each request runs with a timer that shuts its connection's
# socket down at the deadline; the pools below tell the timer which
# connection the request took.

_TAKEN = threading.local()


class _Taken:
    """The connection one request took from its pool (see
    :func:`deadline_timer`)."""

    conn = None


class _Telling:
    """A connection pool that tells the calling thread's request which
    connection it took."""

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        taken = getattr(_TAKEN, 'taken', None)
        if taken is not None:
            taken.conn = conn
        return conn


class _HTTPPool(_Telling, connectionpool.HTTPConnectionPool):
    pass


class _HTTPSPool(_Telling, connectionpool.HTTPSConnectionPool):
    pass


def cut_at_deadline(session):
    """Make the connection pools of ``session`` (keystoneauth) tell
    :func:`deadline_timer` which connection each request takes."""
    for prefix in ('http://', 'https://'):
        adapter = session.session.get_adapter(prefix)
        adapter.poolmanager.pool_classes_by_scheme = {
            'http': _HTTPPool, 'https': _HTTPSPool}


def deadline_timer(seconds):
    """Return a started timer that shuts down the socket of the connection
    the calling thread's next request takes, ``seconds`` from now (its reads
    then fail at once).  Cancel it when the request is done."""
    taken = _Taken()
    _TAKEN.taken = taken

    def cut():
        sock = getattr(taken.conn, 'sock', None)
        if sock is not None:
            try:
                # the plain socket's: an SSL socket's shutdown() would also
                # tear down its TLS state under the reading thread
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass
    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    return timer


def valid_uuid(value):
    """Return ``value`` if it is a canonical (lowercase) UUID, else None."""
    if isinstance(value, str) and _UUID_RE.fullmatch(value):
        return value
    return None


#: Seconds a request may take, its answer read to the end, when
#: ``[ironic] timeout`` is not set.
DEFAULT_DEADLINE = 60.0


def max_answer_bytes(page_size):
    """The largest answer accepted for pages of ``page_size`` items: 4 KiB
    an item (a port or node entry with the fields asked for is a few
    hundred bytes) and 1 MiB more."""
    return page_size * 4096 + (1 << 20)


#: The longest node field (state, interface, shard, group) accepted.
MAX_FIELD = 255


def valid_text(value):
    """Return whether ``value`` is None or a printable str of at most
    :data:`MAX_FIELD` characters.

    ironic's states, interface names, shards and groups are short names; a
    value holding a newline or another control character could forge log
    lines or status output, so the entry holding it is refused.
    """
    return value is None or (isinstance(value, str) and value.isprintable()
                             and len(value) <= MAX_FIELD)


def parse_time(value):
    """Return an aware datetime for an ironic timestamp, or None."""
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp


def _items(body, key):
    items = body.get(key) if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise ApiError('%s listing has no "%s" list' % (key[:-1], key))
    return items


def _client_id(entry):
    """The client-id key of a port's ``extra['client-id']``, or None."""
    extra = entry.get('extra')
    if not isinstance(extra, dict) or extra.get('client-id') is None:
        return None
    key = macs.normalize_client_id(extra['client-id'])
    if key is None:
        LOG.warning('Port %s: its extra client-id %.100r is not a client id '
                    '(colon-separated hex); only its MAC is used',
                    entry.get('uuid'), extra['client-id'])
    return key


def parse_ports(body, skipped):
    """Yield ``(uuid, key, node, entry)`` for the valid ports of one page.

    ``key`` is the port's MAC; a port with a client id in its
    ``extra['client-id']`` (InfiniBand) is also yielded, just before,
    under :func:`view.client_id_port` of its UUID, with the client-id key.
    Invalid entries are logged, appended to ``skipped`` (a list) and left
    out; ``node`` is None for a port without a node.

    :raises ApiError: the document has no ``ports`` list.
    """
    for entry in _items(body, 'ports'):
        if not isinstance(entry, dict):
            skipped.append(entry)
            LOG.warning('Skipping a port entry that is not an object: %.100r',
                        entry)
            continue
        uuid = valid_uuid(entry.get('uuid'))
        mac = macs.normalize_mac(entry.get('address'))
        node = entry.get('node_uuid')
        if uuid is None:
            problem = 'its uuid is not a UUID: %.100r' % (entry.get('uuid'),)
        elif mac is None:
            problem = 'invalid MAC address %.100r' % (entry.get('address'),)
        elif node is not None and valid_uuid(node) is None:
            problem = 'its node_uuid is not a UUID: %.100r' % (node,)
        else:
            # Interned: 100k ports share ~1k node UUIDs, and the MAC
            # strings of every listing are the index's keys.
            node = sys.intern(node) if node is not None else None
            client_id = _client_id(entry)
            if client_id is not None:
                # First: a reader that stops after a port has both.
                yield view.client_id_port(uuid), client_id, node, entry
            yield uuid, sys.intern(mac), node, entry
            continue
        skipped.append(entry)
        LOG.warning('Skipping port %.100r: %s', entry.get('uuid'), problem)


def parse_nodes(body, skipped):
    """Yield ``(uuid, NodeInfo)`` for the valid nodes of one page.

    :raises ApiError: the document has no ``nodes`` list.
    """
    for entry in _items(body, 'nodes'):
        uuid = valid_uuid(entry.get('uuid')) if isinstance(entry, dict) \
            else None
        state = entry.get('provision_state') if uuid else None
        optional = ([entry.get(f) for f in ('inspect_interface', 'shard',
                                            'conductor_group')]
                    if uuid else [])
        if (uuid is None or not isinstance(state, str)
                or not valid_text(state)
                or not all(valid_text(v) for v in optional)):
            skipped.append(entry)
            LOG.warning('Skipping a node entry without a valid uuid, '
                        'provision_state, inspect_interface, shard or '
                        'conductor_group (printable, at most %d '
                        'characters): %.300r', MAX_FIELD, entry)
            continue
        yield sys.intern(uuid), policy.NodeInfo(state, *optional)


def next_marker(body):
    """Return the marker of a page's ``next`` link, or None on the last."""
    link = body.get('next')
    if not link:
        return None
    if not isinstance(link, str):
        raise ApiError('"next" link is not a string: %.100r' % (link,))
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
    marker = query.get('marker')
    if not marker:
        raise ApiError('"next" link has no marker: %.200r' % (link,))
    return marker[0]


def _version_text(version):
    return '%d.%d' % version


class IronicClient:
    """Requests to ironic's bare metal API, validated.

    :param conn: an openstacksdk Connection (see :func:`connect`).
    :param page_size: items asked per page (ironic caps it at max_limit).
    :param retries: attempts after the first for a failed request.
    :param retry_interval: first backoff (seconds), doubled per attempt.
    """

    def __init__(self, conn, page_size=1000, retries=3, retry_interval=0.5,
                 max_pages=MAX_PAGES, scope=(), deadline=DEFAULT_DEADLINE):
        self._conn = conn
        self._api = None
        self.page_size = page_size
        self.deadline = deadline
        self.max_bytes = max_answer_bytes(page_size)
        self.retries = retries
        self.retry_interval = retry_interval
        self.max_pages = max_pages
        self.scope = tuple(sorted(scope))
        self.microversion, self.microversion_why = microversion_for(scope)
        self.requests = 0
        self._lock = threading.Lock()

    @classmethod
    def from_conf(cls, conf):
        pf = conf.pxe_filter
        scope = [field for field, values in (('shard', pf.shard),
                                             ('conductor_group',
                                              pf.conductor_group))
                 if values]
        return cls(connect(conf), conf.ironic.page_size,
                   conf.ironic.api_retries, conf.ironic.api_retry_interval,
                   scope=scope,
                   deadline=conf.ironic.timeout or DEFAULT_DEADLINE)

    # -- transport --------------------------------------------------------

    def _proxy(self):
        with self._lock:
            self.requests += 1
            if self._api is not None:
                return self._api
        # Creating the proxy runs version discovery: a request.
        try:
            api = self._conn.baremetal
        except openstack.exceptions.SDKException as exc:
            # openstacksdk hides why discovery failed ("exists but does not
            # have any supported versions"): a TLS or connection error.
            raise ApiError('ironic cannot be used: %s%s'
                           % (exc, self._why_unreachable())) from exc
        self._check_version(api)
        with self._lock:
            self._api = api
        return api

    def _why_unreachable(self):
        """Ask ironic's endpoint once, directly; return what went wrong
        (' (URL: error)'), or ''."""
        config = self._conn.config
        try:
            url = config.get_endpoint('baremetal') or \
                self._conn.session.get_endpoint(
                    service_type='baremetal',
                    interface=config.get_interface('baremetal'),
                    region_name=config.get_region_name('baremetal'),
                    service_name=config.get_service_name('baremetal'))
        except Exception as exc:   # explaining an error: never raise
            return ' (no baremetal endpoint found: %s)' % exc
        if not url:
            return ' (no baremetal endpoint in the catalog)'
        try:
            self._conn.session.get(url, authenticated=False,
                                   raise_exc=False)
        except Exception as exc:
            return ' (%s: %s)' % (url, exc)
        return ''

    def _check_version(self, api):
        try:
            data = api.get_endpoint_data()
        except (ks_exc.ClientException,
                openstack.exceptions.SDKException) as exc:
            raise ApiError('ironic version discovery failed: %s' % exc) \
                from exc
        newest = getattr(data, 'max_microversion', None)
        if newest and tuple(newest)[:2] < self.microversion:
            raise VersionError(
                'ironic at %s supports API versions up to %s; pxefilterd '
                'needs %s (%s)' % (getattr(data, 'url', '?'),
                                   _version_text(tuple(newest)[:2]),
                                   _version_text(self.microversion),
                                   self.microversion_why))

    def get(self, path, params):
        """GET ``path`` once; return the decoded JSON document.

        The whole request, its answer read to the end, takes at most
        :attr:`deadline` seconds (``[ironic] timeout``, which keystoneauth
        applies to each read only: a server trickling a byte at a time
        would hold it for ever) and the answer at most :attr:`max_bytes`.

        :raises NotFound: a 404 (the body names what was not found).
        :raises VersionError: ironic refuses the microversion.
        :raises ApiError: anything else that is not a 200 with JSON, an
            answer that takes longer than the deadline or is too large.
        """
        started = time.monotonic()
        try:
            api = self._proxy()
        except (ks_exc.ClientException,
                openstack.exceptions.SDKException) as exc:
            raise ApiError('GET %s failed: %s' % (path, exc)) from exc
        # The status line and headers are bounded by the timer; the answer
        # by _read (a late cut there also ends in an ApiError).
        timer = deadline_timer(self.deadline)
        try:
            try:
                # log=False: keystoneauth's debug log of the answer would
                # read all of it, with neither deadline nor size limit.
                resp = api.get(path, params=params,
                               microversion=_version_text(self.microversion),
                               raise_exc=False, stream=True, log=False)
            except (ks_exc.ClientException,
                    openstack.exceptions.SDKException) as exc:
                if time.monotonic() - started >= self.deadline:
                    raise self._timed_out(path, 'no answer', exc) from exc
                raise ApiError('GET %s failed: %s' % (path, exc)) from exc
            data = self._read(resp, path, started + self.deadline)
        finally:
            timer.cancel()
            _TAKEN.taken = None
        LOG.debug('GET %s %s: HTTP %d, %d bytes in %.3f s', path, params,
                  resp.status_code, len(data), time.monotonic() - started)
        text = data.decode('utf-8', 'replace')
        if resp.status_code == 404:
            raise NotFound('GET %s returned HTTP 404: %.300r' % (path, text))
        if resp.status_code == 406:
            raise VersionError(
                'ironic refused API version %s, needed for %s: %.300r'
                % (_version_text(self.microversion), self.microversion_why,
                   text))
        if resp.status_code != 200:
            raise ApiError('GET %s returned HTTP %d: %.300r'
                           % (path, resp.status_code, text))
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ApiError('GET %s returned invalid JSON: %s'
                           % (path, exc)) from exc

    def _timed_out(self, path, what, detail=None):
        return ApiError('GET %s timed out: %s within %.1f s ([ironic] '
                        'timeout bounds the whole request)%s'
                        % (path, what, self.deadline,
                           ': %s' % detail if detail else ''))

    def _read(self, resp, path, deadline):
        """Read the answer of ``resp`` (a streamed requests Response) to
        its end; return its bytes.  Each read returns what has arrived (at
        most 64 KiB), so the deadline is checked at least once per read.

        :raises ApiError: past ``deadline``, larger than :attr:`max_bytes`,
            or the connection failed.
        """
        chunks = []
        size = 0
        try:
            while True:
                if time.monotonic() > deadline:
                    raise self._timed_out(path, 'no complete answer')
                chunk = resp.raw.read1(65536, decode_content=True)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_bytes:
                    raise ApiError('GET %s: the answer is larger than %d '
                                   'bytes' % (path, self.max_bytes))
                chunks.append(chunk)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            resp.close()
            if time.monotonic() > deadline:     # cut by the timer
                raise self._timed_out(path, 'no complete answer') from exc
            raise ApiError('GET %s failed while reading the answer: %s'
                           % (path, exc)) from exc
        except ApiError:
            resp.close()
            raise
        resp.raw.release_conn()     # read to its end: reusable
        return b''.join(chunks)

    def _get_page(self, path, params):
        body = self.get(path, params)
        _items(body, path.strip('/').split('/')[-1])   # a page, or ApiError
        return body

    def _retrying(self, func, *args):
        retryer = tenacity.Retrying(
            retry=(tenacity.retry_if_exception_type(ApiError)
                   & tenacity.retry_if_not_exception_type(
                       (NotFound, VersionError))),
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.retry_interval,
                                           max=10),
            before_sleep=lambda rs: LOG.warning(
                'ironic request failed (attempt %d): %s; retrying',
                rs.attempt_number, rs.outcome.exception()),
            reraise=True)
        return retryer(func, *args)

    def pages(self, path, params, limit=None, before_page=None):
        """Yield the decoded JSON document of every page of a collection.

        ``before_page``, if given, is called before each page is asked for.

        Each page is retried on its own.  Follows the ``next`` markers; if
        a marker has been deleted meanwhile (404), goes back to the one
        before (the repeated items are harmless to callers that key by
        UUID), or to the start.  Stops after :attr:`max_pages`.

        :raises ApiError: a page failed after its retries, or the
            collection loops or is longer than ``max_pages``.
        """
        params = dict(params, limit=limit or self.page_size)
        markers = []
        seen = set()
        for _ in range(self.max_pages):
            if markers:
                params['marker'] = markers[-1]
            else:
                params.pop('marker', None)
            if before_page is not None:
                before_page()
            try:
                body = self._retrying(self._get_page, path, params)
            except NotFound as exc:
                if not markers or markers[-1] not in str(exc):
                    raise
                LOG.info('Listing %s: marker %r deleted meanwhile; going '
                         'back one page', path, markers[-1])
                markers.pop()
                continue
            yield body
            marker = next_marker(body)
            if marker is None:
                return
            if marker in seen:
                raise ApiError('listing %s loops at marker %r'
                               % (path, marker))
            seen.add(marker)
            markers.append(marker)
        raise ApiError('listing %s has more than %d pages'
                       % (path, self.max_pages))

    # -- what the service asks --------------------------------------------

    def inspection_nodes(self, states=policy.INSPECTION_STATES):
        """Return ``{uuid: NodeInfo}`` of every node in one of ``states``.

        One listing per state (ironic filters on one state per request),
        every page of each.

        :raises ApiError: after the configured retries.
        """
        skipped = []
        found = {}
        fields = ','.join(('uuid', 'provision_state', 'inspect_interface')
                          + self.scope)
        for state in sorted(states):
            for body in self.pages('/nodes', {'provision_state': state,
                                              'fields': fields}):
                for uuid, info in parse_nodes(body, skipped):
                    if info.provision_state == state:
                        found[uuid] = info
        return found

    def ports(self, params=None, fields=PORT_FIELDS, limit=None,
              max_pages=None, before_page=None):
        """Yield ``(uuid, mac, node, entry)`` for the ports of a listing.

        :param params: filters and sorting (``sort_key``, ``node_uuid``...).
        :param max_pages: stop after this many pages (the change feeds).
        """
        skipped = []
        params = dict(params or {}, fields=fields)
        for count, body in enumerate(
                self.pages('/ports', params, limit, before_page), 1):
            yield from parse_ports(body, skipped)
            if max_pages is not None and count >= max_pages:
                return

    def all_ports(self):
        """Return ``{uuid: (mac, node)}`` for every port (every page).

        :raises ApiError: after the configured retries.
        """
        return {uuid: (mac, node) for uuid, mac, node, _ in self.ports()}

    def listing(self, seq):
        """Return every port as a :class:`view.Listing`.

        :param seq: the sequence (callable) every page takes a number
            from before it is asked for, so that the view can tell how
            fresh each page is.
        :raises ApiError: after the configured retries.
        """
        started = seq()
        pages = []
        ports = {}

        def before_page():
            if ports or pages:
                pages.append((len(ports), pages_seq[0]))
            pages_seq[0] = seq()

        pages_seq = [started]
        # Merged entry by entry: a list of every entry would add ~6 MB to
        # the daemon's peak memory at 100k ports.
        for uuid, mac, node, _ in self.ports(before_page=before_page):
            ports[uuid] = (mac, node)
        pages.append((len(ports), pages_seq[0]))
        return view.Listing(started, ports, pages)

    def ports_of(self, node):
        """Return ``{uuid: (mac, node)}`` for the ports of ``node``.

        :raises NodeGone: ironic says the node does not exist.
        :raises ApiError: after the configured retries.
        """
        try:
            return {uuid: (mac, owner) for uuid, mac, owner, _
                    in self.ports({'node_uuid': node})}
        except NotFound as exc:
            if node in str(exc):
                raise NodeGone(node, str(exc)) from exc
            raise

    def snapshot(self):
        """Return a :class:`policy.Snapshot`: every port, inspected nodes.

        For one-shot use (``pxefilterd-ctl``); the daemon keeps a view.

        :raises ApiError: after the configured retries.
        """
        return view.snapshot_of(self.all_ports(), self.inspection_nodes())
