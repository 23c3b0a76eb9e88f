"""A real standalone ironic (all-in-one API + conductor, SQLite), a test peer.

:class:`IronicService` owns one working directory holding ``ironic.conf``, the
SQLite database, the lock directory and ``ironic.log``.  It

- picks a free TCP port on 127.0.0.1 when constructed and *reserves* it (keeps
  a bound, non-listening socket) until the first :meth:`IronicService.start`,
  so :attr:`IronicService.url` is known before ironic runs (for the scenario
  "ironic unreachable when the daemon starts, comes up later");
- creates the schema with ``ironic-dbsync create_schema`` (:meth:`prepare`);
- can bulk-insert nodes and ports straight into SQLite before start
  (:meth:`bulk_load`; ~100x faster than the API for 10k+ ports);
- starts the ``ironic`` binary of the ironic venv with a timeout, and stops it
  with SIGTERM then SIGKILL, by PID; it can be started again afterwards on the
  same port and database;
- drives the REST API with plain :mod:`urllib` (no test-venv dependency).

Ironic runs from the virtualenv given by ``PXEFILTERD_IRONIC_VENV`` (default
``/opt/ironic-venv``); this module itself only needs the standard library.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import preflight, procs

#: Microversion sent with every request.  1.82 has everything the harness and
#: pxefilterd need (fields >= 1.8, provision_state filter >= 1.9, inspect
#: interface >= 1.31, abort from inspect wait >= 1.41, shard >= 1.82); ironic
#: 39 serves 1.1 to 1.115.
API_VERSION = "1.82"

#: Provision states in which a wait for another state can no longer succeed.
_FAILED_STATES = frozenset(
    {"error", "inspect failed", "clean failed", "deploy failed",
     "adopt failed", "rescue failed", "unrescue failed", "service failed"})

# Driver interfaces a node gets with the conf written below; used by bulk_load
# so that bulk rows look exactly like nodes created through the API.
_NODE_INTERFACES = {
    "bios_interface": "fake",
    "boot_interface": "fake",
    "console_interface": "no-console",
    "deploy_interface": "fake",
    "firmware_interface": "fake",
    "management_interface": "fake",
    "network_interface": "noop",
    "power_interface": "fake",
    "raid_interface": "fake",
    "rescue_interface": "fake",
    "storage_interface": "noop",
    "vendor_interface": "no-vendor",
}

_CONF_TEMPLATE = """\
[DEFAULT]
host = {host}
auth_strategy = noauth
rpc_transport = none
debug = false
enabled_hardware_types = fake-hardware
enabled_bios_interfaces = fake,no-bios
enabled_boot_interfaces = fake
enabled_console_interfaces = no-console
enabled_deploy_interfaces = fake
enabled_firmware_interfaces = fake,no-firmware
enabled_inspect_interfaces = agent,fake
default_inspect_interface = agent
enabled_management_interfaces = fake
enabled_network_interfaces = noop
enabled_power_interfaces = fake
enabled_raid_interfaces = fake,no-raid
enabled_rescue_interfaces = fake,no-rescue
enabled_storage_interfaces = noop
enabled_vendor_interfaces = no-vendor

[api]
host_ip = 127.0.0.1
port = {port}
max_limit = {max_limit}

[database]
connection = sqlite:///{db_path}

[oslo_concurrency]
lock_path = {lock_path}

[conductor]
automated_clean = false
# keep the conductor quiet: bulk-loaded fake nodes need no power sync
sync_power_state_interval = 0
sync_local_state_interval = 0
check_provision_state_interval = {check_interval}
inspect_wait_timeout = {inspect_wait_timeout}
heartbeat_interval = 5

[inspector]
require_managed_boot = false

[dhcp]
dhcp_provider = none

[oslo_messaging_notifications]
driver = noop
{extra}"""


class IronicError(RuntimeError):
    """Ironic could not be prepared, started, stopped or asked something.

    ``status`` is the HTTP status for API errors (``None`` otherwise).
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class BulkLoad:
    """What :meth:`IronicService.bulk_load` inserted.

    ``nodes`` lists node UUIDs in insertion order; ``ports`` maps each port MAC
    (lowercase) to its node UUID; ``seconds`` is the time the insert took.
    """

    nodes: list[str] = field(default_factory=list)
    ports: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _now_db() -> str:
    """Current UTC time as the DB stores it (naive ISO, space separator)."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    return now.isoformat(sep=" ", timespec="microseconds")


def _proc_start_time(pid: int) -> int | None:
    """Return the start time (clock ticks) of *pid*; ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces/parentheses: fields start after the last ')'
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] == b"Z":
        return None
    return int(fields[19])


def _descendants(pid: int) -> list[tuple[int, int]]:
    """Return ``(pid, start_time)`` of every live descendant of *pid*.

    The start time lets :func:`_kill_if_same` avoid signalling a reused PID.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        ppid = int(data[data.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    result = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        start = _proc_start_time(child)
        if start is not None:
            result.append((child, start))
        todo.extend(children.get(child, []))
    return result


def _kill_if_same(pid: int, start_time: int, sig: int) -> None:
    """Send *sig* to *pid* only if it is still the process that started at
    *start_time*; silently does nothing otherwise."""
    if _proc_start_time(pid) == start_time:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


#: ironic venv -> bytes of an empty database with its schema, made once per
#: process by ``ironic-dbsync create_schema``.
_SCHEMAS: dict[Path, bytes] = {}


class IronicService:
    """One standalone ironic process with its own conf, DB, port and log.

    Construction writes ``ironic.conf`` and reserves the port; it does not run
    anything.  Raises :class:`IronicError` (and only that, apart from
    ``OSError`` for an unusable *workdir*) from every method that fails.
    """

    def __init__(self, workdir: str | os.PathLike[str], *,
                 venv: str | os.PathLike[str] | None = None,
                 port: int | None = None,
                 inspect_wait_timeout: int = 3600,
                 check_provision_state_interval: int = 10,
                 max_limit: int = 1000,
                 extra_conf: str = "",
                 request_timeout: float = 15.0,
                 scheme: str = "http",
                 ssl_context: ssl.SSLContext | None = None,
                 headers: dict[str, str] | None = None):
        """Write the conf into *workdir* (created if needed), reserve a port.

        *port* pins the port instead of picking a free one (no reservation).
        *extra_conf* is appended verbatim to ``ironic.conf`` (more sections).
        *inspect_wait_timeout*: seconds a node may stay in ``inspect wait``
        before the conductor fails it (0 = forever; default 1 h).
        *scheme* ``"https"`` for an ironic that serves TLS (set up through
        *extra_conf*), with *ssl_context* to verify it; *headers* (e.g.
        ``X-Auth-Token`` for an ironic behind keystone) go with every
        request (:attr:`headers` may be changed later).
        """
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.venv = Path(venv) if venv else preflight.ironic_venv()
        self.request_timeout = request_timeout
        self.scheme = scheme
        self.ssl_context = ssl_context
        self.headers: dict[str, str] = dict(headers or {})
        self._reservation: socket.socket | None = None
        if port is None:
            self._reservation = procs.reserve_port()
            port = self._reservation.getsockname()[1]
        self.port = int(port)
        self.conf_path = self.workdir / "ironic.conf"
        self.db_path = self.workdir / "ironic.db"
        self.lock_path = self.workdir / "locks"
        self.log_path = self.workdir / "ironic.log"
        self.lock_path.mkdir(exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._children: list[tuple[int, int]] = []
        self._prepared = False
        self._versions: dict[str, str] | None = None
        self.conf_path.write_text(_CONF_TEMPLATE.format(
            host=f"pxf-test-{self.port}", port=self.port, max_limit=max_limit,
            db_path=self.db_path, lock_path=self.lock_path,
            check_interval=check_provision_state_interval,
            inspect_wait_timeout=inspect_wait_timeout,
            extra=("\n" + extra_conf) if extra_conf else ""))

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """API base URL ``http://127.0.0.1:PORT`` (or ``https``); valid
        before start."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the running ironic main process, or ``None``."""
        return self._proc.pid if self.is_running() else None

    def is_running(self) -> bool:
        """True while the ironic process started by :meth:`start` is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def prepare(self, timeout: float = 120.0) -> None:
        """Create the DB schema once (idempotent).

        Raises :class:`IronicError` with the tool's output if
        ``ironic-dbsync create_schema`` fails or exceeds *timeout* seconds.
        """
        if self._prepared:
            return
        problem = preflight.ironic_problem(self.venv)
        if problem:
            raise IronicError(problem)
        if not self.db_path.exists():
            template = _SCHEMAS.get(self.venv)
            if template is None:
                try:
                    self._run([self._bin("ironic-dbsync"), "--config-file",
                               str(self.conf_path), "create_schema"],
                              timeout)
                except IronicError:
                    self.db_path.unlink(missing_ok=True)
                    raise
                _SCHEMAS[self.venv] = self.db_path.read_bytes()
            else:
                # An empty schema holds nothing of this instance: a copy is
                # as good as running ironic-dbsync again (~3 s).
                self.db_path.write_bytes(template)
        self._prepared = True

    def _run(self, argv: list[str], timeout: float) -> str:
        """Run *argv* in workdir; return stdout+stderr; raise IronicError."""
        try:
            res = subprocess.run(
                argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise IronicError(f"{argv[0]} timed out after {timeout}s") from exc
        out = res.stdout.decode(errors="replace")
        if res.returncode != 0:
            raise IronicError(f"{' '.join(argv)} exited {res.returncode}:\n"
                              f"{out[-3000:]}")
        return out

    def object_versions(self) -> dict[str, str]:
        """Return the venv ironic's ``{"Node": "1.44", "Port": "1.16"}``.

        Asked once from the ironic venv (about 0.7 s) and cached; bulk rows
        need these so ironic treats them as current objects.
        """
        if self._versions is None:
            code = ("import json; from ironic.objects import node, port; "
                    "print(json.dumps({'Node': node.Node.VERSION, "
                    "'Port': port.Port.VERSION}))")
            out = self._run(
                [self._bin("python"), "-W", "ignore", "-c", code], 60)
            self._versions = json.loads(out.strip().splitlines()[-1])
        return self._versions

    def start(self, timeout: float = 60.0) -> None:
        """Start ironic; return once the API answers and fake-hardware is up.

        Runs :meth:`prepare` first if needed.  Ready means ``GET /v1/drivers``
        lists ``fake-hardware`` (the conductor registered).  Raises
        :class:`IronicError` carrying the last lines of ``ironic.log`` if the
        process exits or is not ready within *timeout* seconds (it is stopped
        then).  Calling it while running is an error.
        """
        if self.is_running():
            raise IronicError("ironic is already running")
        self.prepare()
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None
        deadline = time.monotonic() + timeout
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== harness start {_now_db()} ====\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [self._bin("ironic"), "--config-file", str(self.conf_path)],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=procs.die_with_parent(signal.SIGTERM))
        try:
            while True:
                if self._proc.poll() is not None:
                    code = self._proc.returncode
                    self._proc = None
                    self._rereserve()
                    raise IronicError(
                        f"ironic exited with {code} during start-up; "
                        f"log tail:\n{self.log_tail()}")
                if self._drivers_ready():
                    self._children = _descendants(self._proc.pid)
                    return
                if time.monotonic() > deadline:
                    raise IronicError(f"ironic not ready after {timeout}s; "
                                      f"log tail:\n{self.log_tail()}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise

    def _drivers_ready(self) -> bool:
        """True once ``GET /v1/drivers`` lists fake-hardware."""
        try:
            drivers = self.request("GET", "/v1/drivers", timeout=2.0)
            return any(d.get("name") == "fake-hardware"
                       for d in drivers["drivers"])
        except (IronicError, KeyError, TypeError, AttributeError):
            return False

    def stop(self, timeout: float = 20.0) -> int | None:
        """Stop ironic: SIGTERM by PID, SIGKILL after *timeout* seconds.

        Also SIGKILLs, by PID, worker processes it leaves behind, then
        re-reserves the port (best effort) for the next :meth:`start`.
        Idempotent; returns the exit status, or ``None`` if it was not
        running.  Never raises for a process that is already gone.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        children = self._children + _descendants(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        grace = time.monotonic() + 3.0
        for pid, start in children:
            while _proc_start_time(pid) == start and time.monotonic() < grace:
                time.sleep(0.05)
            _kill_if_same(pid, start, signal.SIGKILL)
        self._children = []
        self._rereserve()
        return proc.returncode

    def _rereserve(self) -> None:
        """Hold the port again while stopped; skip if someone else has it."""
        if self._reservation is None:
            try:
                self._reservation = procs.reserve_port(self.port)
            except OSError:
                pass

    def kill(self) -> None:
        """SIGKILL ironic and its workers at once (a crash, not a shutdown)."""
        if self._proc is not None:
            children = self._children + _descendants(self._proc.pid)
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait(10)
            for pid, start in children:
                _kill_if_same(pid, start, signal.SIGKILL)
        self._proc = None
        self._children = []
        self._rereserve()

    def close(self) -> None:
        """Kill ironic (by PID) and release the port reservation.

        Idempotent.  A throw-away instance needs no graceful shutdown
        (:meth:`stop` takes ~3 s).  The workdir (conf, DB, log) is left for
        the caller to remove.
        """
        self.kill()
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None

    def __enter__(self) -> IronicService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        """Return the last *lines* lines of ``ironic.log`` ('' if none)."""
        return procs.tail(self.log_path, lines)

    # ------------------------------------------------------------ API

    def request(self, method: str, path: str, body: object = None, *,
                timeout: float | None = None) -> dict:
        """Send one API request and return the decoded JSON body ({} if empty).

        *path* is relative to :attr:`url` (``/v1/...``) or an absolute URL
        (a ``next`` link).  Raises :class:`IronicError` (``status`` set for
        HTTP errors) on any failure, including connection refused and timeout.
        """
        url = path if path.startswith("http") else self.url + path
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Accept": "application/json",
            "Content-Type": "application/json",
            "X-OpenStack-Ironic-API-Version": API_VERSION,
            **self.headers,
        })
        try:
            with urllib.request.urlopen(
                    req, timeout=timeout or self.request_timeout,
                    context=self.ssl_context) as resp:
                raw = resp.read()
            return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:1000]
            raise IronicError(f"{method} {path}: HTTP {exc.code}: {detail}",
                              status=exc.code) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise IronicError(f"{method} {path}: {exc}") from exc

    def _list(self, resource: str, query: dict[str, str]) -> list[dict]:
        """GET /v1/<resource> following ``next`` links; return all items."""
        items: list[dict] = []
        path: str | None = f"/v1/{resource}?{urllib.parse.urlencode(query)}"
        while path:
            page = self.request("GET", path)
            items.extend(page[resource])
            path = page.get("next")
        return items

    def list_ports(self, fields: tuple[str, ...] = ("address", "node_uuid")
                   ) -> list[dict]:
        """Return every port (all pages) with only *fields*."""
        return self._list("ports", {"fields": ",".join(fields)})

    def list_nodes(self, provision_state: str | None = None,
                   fields: tuple[str, ...] = ("uuid", "name",
                                              "provision_state"),
                   ) -> list[dict]:
        """Return every node (all pages), optionally in *provision_state*."""
        query = {"fields": ",".join(fields)}
        if provision_state:
            query["provision_state"] = provision_state
        return self._list("nodes", query)

    def node(self, node_uuid: str) -> dict:
        """Return the node's full JSON representation."""
        return self.request("GET", f"/v1/nodes/{node_uuid}")

    def provision_state(self, node_uuid: str) -> str:
        """Return the node's current ``provision_state``."""
        node = self.request(
            "GET", f"/v1/nodes/{node_uuid}?fields=provision_state")
        return node["provision_state"]

    def wait_for_state(self, node_uuid: str, state: str,
                       timeout: float = 30.0) -> None:
        """Poll until the node is in *state*.

        Raises :class:`IronicError` at once if the node lands in a failed state
        other than *state* (with its ``last_error``), or after *timeout* s.
        """
        deadline = time.monotonic() + timeout
        while True:
            node = self.request(
                "GET",
                f"/v1/nodes/{node_uuid}?fields=provision_state,last_error")
            current = node["provision_state"]
            if current == state:
                return
            if current in _FAILED_STATES:
                raise IronicError(
                    f"node {node_uuid} is '{current}' waiting for "
                    f"'{state}': {node.get('last_error')}")
            if time.monotonic() > deadline:
                raise IronicError(f"node {node_uuid} still '{current}' after "
                                  f"{timeout}s waiting for '{state}'")
            time.sleep(0.1)

    def set_provision_state(self, node_uuid: str, target: str) -> None:
        """Request a provision-state change (``manage``, ``inspect``, ...)."""
        self.request("PUT", f"/v1/nodes/{node_uuid}/states/provision",
                     {"target": target})

    def create_node(self, name: str, inspect_interface: str = "agent", *,
                    timeout: float = 30.0) -> str:
        """Create a fake-hardware node, enroll -> manageable; return its UUID.

        Raises :class:`IronicError` if creation fails or ``manageable`` is not
        reached within *timeout* seconds.
        """
        node = self.request("POST", "/v1/nodes", {
            "name": name, "driver": "fake-hardware",
            "inspect_interface": inspect_interface})
        self.set_provision_state(node["uuid"], "manage")
        self.wait_for_state(node["uuid"], "manageable", timeout)
        return node["uuid"]

    def create_port(self, node_uuid: str, mac: str,
                    extra: dict | None = None) -> str:
        """Create a port with address *mac* on the node; return its UUID.

        *extra*: the port's ``extra`` (e.g. ``{"client-id": ...}`` of an
        InfiniBand port).
        """
        body: dict[str, object] = {"node_uuid": node_uuid, "address": mac}
        if extra is not None:
            body["extra"] = extra
        return self.request("POST", "/v1/ports", body)["uuid"]

    def delete_port(self, port_uuid: str) -> None:
        """Delete the port (:class:`IronicError` with status 404 if absent)."""
        self.request("DELETE", f"/v1/ports/{port_uuid}")

    def delete_node(self, node_uuid: str) -> None:
        """Delete the node and, with it, its ports."""
        self.request("DELETE", f"/v1/nodes/{node_uuid}")

    def _patch(self, path: str, fields: dict) -> dict:
        ops = [{"op": "replace", "path": "/" + name, "value": value}
               for name, value in fields.items()]
        return self.request("PATCH", path, ops)

    def patch_port(self, port_uuid: str, **fields: object) -> dict:
        """Replace port fields (``address=...``, ``node_uuid=...``)."""
        return self._patch(f"/v1/ports/{port_uuid}", fields)

    def patch_node(self, node_uuid: str, **fields: object) -> dict:
        """Replace node fields (``inspect_interface=...``, ``shard=...``)."""
        return self._patch(f"/v1/nodes/{node_uuid}", fields)

    def set_maintenance(self, node_uuid: str, on: bool = True) -> None:
        """Put the node in (or take it out of) maintenance mode."""
        if on:
            self.request("PUT", f"/v1/nodes/{node_uuid}/maintenance",
                         {"reason": "pxefilterd test"})
        else:
            self.request("DELETE", f"/v1/nodes/{node_uuid}/maintenance")

    def force_delete_node(self, node_uuid: str) -> None:
        """Delete a node whatever its state: maintenance on, then delete
        (what an operator does with a node stuck in inspection)."""
        self.set_maintenance(node_uuid, True)
        self.delete_node(node_uuid)

    def inspect(self, node_uuid: str, *, expect: str | None = "inspect wait",
                timeout: float = 30.0) -> None:
        """Start inspection of a manageable node and wait for state *expect*.

        With the ``agent`` inspect interface the node stays in ``inspect wait``
        (the default *expect*); for ``fake`` pass ``expect="manageable"`` (it
        may already be back when polling starts).  ``expect=None``: don't wait.
        """
        self.set_provision_state(node_uuid, "inspect")
        if expect:
            self.wait_for_state(node_uuid, expect, timeout)

    def abort(self, node_uuid: str, *, timeout: float = 30.0) -> None:
        """Abort inspection (``inspect wait`` -> ``inspect failed``), wait."""
        self.set_provision_state(node_uuid, "abort")
        self.wait_for_state(node_uuid, "inspect failed", timeout)

    # ------------------------------------------------------------ bulk

    def bulk_load(self, n_nodes: int, ports_per_node: int, mac_prefix: str, *,
                  provision_state: str = "manageable",
                  inspect_interface: str = "agent",
                  name_prefix: str | None = None) -> BulkLoad:
        """Insert *n_nodes* fake-hardware nodes, *ports_per_node* ports each.

        Rows go straight into SQLite in one transaction, so ironic must NOT be
        running (raises :class:`IronicError`); the schema is created first if
        needed.  MACs are *mac_prefix* (1-5 octets, e.g. ``"52:54:01"``)
        followed by a running counter in the remaining octets, lowercase.
        Rows mirror what the API writes (interfaces, JSON columns, object
        versions), so the API lists them, filters on provision_state, and can
        move them on.  Raises :class:`IronicError` on a duplicate MAC or name,
        or if the prefix leaves too little room for the counter.
        """
        if self.is_running():
            raise IronicError("bulk_load needs ironic stopped (writes SQLite)")
        octets = mac_prefix.lower().strip(":").split(":")
        if not 1 <= len(octets) <= 5 or any(len(o) != 2 for o in octets):
            raise IronicError(f"bad mac_prefix {mac_prefix!r}")
        free = 6 - len(octets)
        total = n_nodes * ports_per_node
        if total > 256 ** free:
            raise IronicError(f"{total} ports do not fit behind {mac_prefix}")
        self.prepare()
        versions = self.object_versions()
        name_prefix = name_prefix or "bulk-" + "".join(octets)
        now = _now_db()
        result = BulkLoad()
        t0 = time.monotonic()
        node_cols = dict(_NODE_INTERFACES, inspect_interface=inspect_interface)
        node_rows = []
        for i in range(n_nodes):
            node_uuid = str(uuid.uuid4())
            result.nodes.append(node_uuid)
            node_rows.append((node_uuid, f"{name_prefix}-{i:06d}",
                              provision_state, now, now, versions["Node"],
                              *node_cols.values()))
        cols = ", ".join(node_cols)
        node_sql = (
            "INSERT INTO nodes (uuid, name, driver, power_state,"
            " provision_state, provision_updated_at, created_at, version,"
            " conductor_group, maintenance, console_enabled, protected,"
            " retired, disable_power_off,"
            " instance_info, properties, driver_info, driver_internal_info,"
            " clean_step, deploy_step, service_step, raid_config,"
            " target_raid_config, extra, network_data, " + cols + ") VALUES"
            " (?, ?, 'fake-hardware', 'power off', ?, ?, ?, ?,"
            " '', 0, 0, 0, 0, 0, "
            + ", ".join(["'{}'"] * 11) + ", "
            + ", ".join("?" * len(node_cols)) + ")")
        port_sql = (
            "INSERT INTO ports (uuid, address, node_id, extra,"
            " local_link_connection, internal_info, pxe_enabled, is_smartnic,"
            " available_for_dynamic_portgroup, version, created_at) VALUES"
            " (?, ?, ?, '{}', '{}', '{}', 1, 0, 1, ?, ?)")
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            with db:
                db.executemany(node_sql, node_rows)
                ids = dict(db.execute("SELECT uuid, id FROM nodes"))
                port_rows = []
                counter = 0
                for node_uuid in result.nodes:
                    for _ in range(ports_per_node):
                        raw = counter.to_bytes(free, "big").hex()
                        mac = ":".join(octets + [
                            raw[j:j + 2] for j in range(0, 2 * free, 2)])
                        counter += 1
                        result.ports[mac] = node_uuid
                        port_rows.append((str(uuid.uuid4()), mac,
                                          ids[node_uuid], versions["Port"],
                                          now))
                db.executemany(port_sql, port_rows)
        except sqlite3.Error as exc:
            raise IronicError(f"bulk_load failed: {exc}") from exc
        finally:
            db.close()
        result.seconds = time.monotonic() - t0
        return result
