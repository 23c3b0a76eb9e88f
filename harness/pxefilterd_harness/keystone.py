"""A real keystone (identity service, SQLite, fernet tokens), a test peer.

:class:`KeystoneService` owns one working directory holding
``keystone.conf``, the SQLite database, the fernet and credential key
repositories, the small WSGI server script and ``keystone.log``.  It

- picks a free TCP port on 127.0.0.1 when constructed and reserves it until
  :meth:`KeystoneService.start`, so :attr:`KeystoneService.url` is known
  before keystone runs (the bootstrap writes it into the catalog);
- initialises keystone with ``keystone-manage`` (:meth:`prepare`):
  ``db_sync``, ``fernet_setup``, ``credential_setup`` and ``bootstrap`` (an
  ``admin`` user with the ``admin`` role on project ``admin`` and on the
  system, the ``reader``/``member``/``manager``/``admin``/``service`` roles,
  and the identity service with public, internal and admin endpoints in
  :attr:`KeystoneService.region`);
- serves keystone's WSGI application with a threaded :mod:`wsgiref` server
  run by the keystone venv's python as a child process, over plain HTTP or,
  given a certificate and key (see :mod:`pxefilterd_harness.tls`), over TLS;
  it is stopped by PID;
- drives the identity API with plain :mod:`urllib` as the bootstrap admin
  (system-scoped token): services, endpoints, projects, users, roles.

:func:`ironic_auth_conf` returns the ironic configuration that puts an
:class:`~pxefilterd_harness.ironic.IronicService` behind this keystone
(``auth_strategy = keystone``, keystonemiddleware, optionally TLS).

Keystone runs from the virtualenv given by ``PXEFILTERD_KEYSTONE_VENV``
(default ``.venv-keystone`` in the source tree, made by ``tools/setup.sh``);
this module itself only needs the standard library.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from . import preflight, procs
from .ironic import _now_db
from .tls import TlsFiles

#: Region of every endpoint the harness registers (and of the bootstrap's).
DEFAULT_REGION = "RegionOne"

_CONF_TEMPLATE = """\
[DEFAULT]
debug = {debug}

[database]
connection = sqlite:///{db_path}

[token]
provider = fernet
expiration = 7200

[fernet_tokens]
key_repository = {fernet_keys}
max_active_keys = 3

[fernet_receipts]
key_repository = {fernet_keys}
max_active_keys = 3

[credential]
key_repository = {credential_keys}

[identity]
# test passwords: the cheapest bcrypt cost keeps each authentication at
# about a millisecond instead of a quarter of a second of CPU
password_hash_rounds = 4

[oslo_messaging_notifications]
driver = noop
{extra}"""

# Run by the keystone venv's python: serve keystone's WSGI application on
# 127.0.0.1:PORT, threaded, optionally over TLS.  argv: port [cert key].
# The application is built before the socket listens, so the first answer
# means keystone is ready.
_SERVER_SCRIPT = '''\
import socketserver
import ssl
import sys
from wsgiref import simple_server

from keystone.server import wsgi as keystone_wsgi

PORT = int(sys.argv[1])
TLS = None
if len(sys.argv) > 3:
    TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    TLS.load_cert_chain(sys.argv[2], sys.argv[3])
# keystone parses the command line as its own options: leave it none
del sys.argv[1:]


class Handler(simple_server.WSGIRequestHandler):
    def get_environ(self):
        env = super().get_environ()
        if TLS is not None:
            # keystone builds its links (version discovery) from this
            env["HTTPS"] = "on"
        return env


class Server(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def finish_request(self, request, client_address):
        request.settimeout(60)
        if TLS is None:
            return super().finish_request(request, client_address)
        # handshake in the request's thread, not in the accept loop
        try:
            conn = TLS.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            sys.stderr.write("TLS handshake with %s failed: %s\\n"
                             % (client_address[0], exc))
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()


application = keystone_wsgi.initialize_public_application()
server = Server(("127.0.0.1", PORT), Handler)
server.set_app(application)
sys.stderr.write("keystone serving on port %d (%s)\\n"
                 % (PORT, "https" if TLS else "http"))
sys.stderr.flush()
server.serve_forever()
'''


class KeystoneError(RuntimeError):
    """Keystone could not be prepared, started or asked something.

    ``status`` is the HTTP status for API errors (``None`` otherwise).
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class KeystoneService:
    """One keystone process with its own conf, DB, keys, port and log.

    Construction writes the conf and reserves the port; it runs nothing.
    *tls* (from :func:`pxefilterd_harness.tls.make_ca`) makes it serve HTTPS
    with that certificate; the harness's own requests then trust
    ``tls.ca_cert`` only.  *admin_password* is the bootstrap admin's.
    *extra_conf* is appended verbatim to ``keystone.conf``.
    """

    def __init__(self, workdir: str | os.PathLike[str], *,
                 venv: str | os.PathLike[str] | None = None,
                 tls: TlsFiles | None = None,
                 admin_password: str = "pxf-admin-secret",
                 region: str = DEFAULT_REGION,
                 debug: bool = False,
                 extra_conf: str = "",
                 request_timeout: float = 15.0):
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.venv = Path(venv) if venv else preflight.keystone_venv()
        self.tls = tls
        self.admin_password = admin_password
        self.region = region
        self.request_timeout = request_timeout
        self.ssl_context = (ssl.create_default_context(
            cafile=str(tls.ca_cert)) if tls else None)
        self._reservation: socket.socket | None = procs.reserve_port()
        self.port = self._reservation.getsockname()[1]
        self.conf_path = self.workdir / "keystone.conf"
        self.db_path = self.workdir / "keystone.db"
        self.log_path = self.workdir / "keystone.log"
        self.script_path = self.workdir / "serve_keystone.py"
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self._admin_token: str | None = None
        fernet_keys = self.workdir / "fernet-keys"
        credential_keys = self.workdir / "credential-keys"
        self.conf_path.write_text(_CONF_TEMPLATE.format(
            debug="true" if debug else "false", db_path=self.db_path,
            fernet_keys=fernet_keys, credential_keys=credential_keys,
            extra=("\n" + extra_conf) if extra_conf else ""))
        self.script_path.write_text(_SERVER_SCRIPT)

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Unversioned base URL ``http(s)://127.0.0.1:PORT``; valid before
        start.  This is what the catalog's identity endpoints hold."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def auth_url(self) -> str:
        """The v3 URL a client authenticates against."""
        return self.url + "/v3"

    @property
    def pid(self) -> int | None:
        """PID of the running WSGI server, or ``None``."""
        return self._proc.pid if self.is_running() else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def _manage(self, *args: str, timeout: float) -> str:
        """Run ``keystone-manage --config-file CONF ARGS``; return output."""
        argv = [self._bin("keystone-manage"), "--config-file",
                str(self.conf_path), *args]
        started = time.monotonic()
        try:
            res = subprocess.run(
                argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise KeystoneError(f"keystone-manage {args[0]} timed out after "
                                f"{timeout}s") from exc
        out = res.stdout.decode(errors="replace")
        with open(self.log_path, "a") as log:
            log.write(f"==== keystone-manage {args[0]} "
                      f"({time.monotonic() - started:.1f} s) ====\n{out}")
        if res.returncode != 0:
            raise KeystoneError(f"keystone-manage {args[0]} exited "
                                f"{res.returncode}:\n{out[-3000:]}")
        return out

    def prepare(self, timeout: float = 180.0) -> None:
        """Create the DB, the key repositories and the bootstrap data, once.

        Raises :class:`KeystoneError` with the tool's output if a
        ``keystone-manage`` step fails or exceeds *timeout* seconds.
        """
        if self._prepared:
            return
        problem = preflight.keystone_problem(self.venv)
        if problem:
            raise KeystoneError(problem)
        owner = []
        if os.geteuid() == 0:
            # as root keystone-manage wants to know who owns the keys
            owner = ["--keystone-user", "root", "--keystone-group", "root"]
        # The three are independent (two only write key files): overlap
        # them, each costs ~5 s, mostly imports.
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            steps = [pool.submit(self._manage, "db_sync", timeout=timeout),
                     pool.submit(self._manage, "fernet_setup", *owner,
                                 timeout=timeout),
                     pool.submit(self._manage, "credential_setup", *owner,
                                 timeout=timeout)]
            for step in steps:
                step.result()
        self._manage(
            "bootstrap", "--bootstrap-password", self.admin_password,
            "--bootstrap-region-id", self.region,
            "--bootstrap-public-url", self.url,
            "--bootstrap-internal-url", self.url,
            "--bootstrap-admin-url", self.url, timeout=timeout)
        self._prepared = True

    def start(self, timeout: float = 60.0) -> None:
        """Start keystone; return once ``GET /v3`` answers.

        Runs :meth:`prepare` first if needed.  Raises :class:`KeystoneError`
        with the last lines of ``keystone.log`` if the server exits or does
        not answer within *timeout* seconds (it is killed then).
        """
        if self.is_running():
            raise KeystoneError("keystone is already running")
        self.prepare()
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None
        argv = [self._bin("python"), str(self.script_path), str(self.port)]
        if self.tls:
            argv += [str(self.tls.cert), str(self.tls.key)]
        env = dict(os.environ,
                   OS_KEYSTONE_CONFIG_FILES=str(self.conf_path),
                   PYTHONDONTWRITEBYTECODE="1")
        deadline = time.monotonic() + timeout
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== harness start {_now_db()} ====\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
                preexec_fn=procs.die_with_parent(signal.SIGTERM))
        try:
            while True:
                if self._proc.poll() is not None:
                    code = self._proc.returncode
                    self._proc = None
                    raise KeystoneError(
                        f"keystone exited with {code} during start-up; "
                        f"log tail:\n{self.log_tail()}")
                try:
                    self.request("GET", "/v3", timeout=2.0)
                    return
                except KeystoneError:
                    pass
                if time.monotonic() > deadline:
                    raise KeystoneError(f"keystone not ready after "
                                        f"{timeout}s; log tail:\n"
                                        f"{self.log_tail()}")
                time.sleep(0.2)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the server by PID (nothing to shut down gracefully:
        every request is answered before the next state change)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def close(self) -> None:
        """Kill keystone (by PID) and release the port reservation.

        Idempotent.  The workdir is left for the caller to remove.
        """
        self.kill()
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None

    def __enter__(self) -> KeystoneService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        """Return the last *lines* lines of ``keystone.log`` ('' if none)."""
        return procs.tail(self.log_path, lines)

    # ------------------------------------------------------------ API

    def _send(self, method: str, path: str, body: object, token: str | None,
              timeout: float | None) -> tuple[dict, dict[str, str]]:
        url = path if path.startswith("http") else self.url + path
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json",
                   "Content-Type": "application/json"}
        if token:
            headers["X-Auth-Token"] = token
        req = urllib.request.Request(url, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(
                    req, timeout=timeout or self.request_timeout,
                    context=self.ssl_context) as resp:
                raw = resp.read()
                resp_headers = dict(resp.headers.items())
            return (json.loads(raw) if raw else {}), resp_headers
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            if exc.code == 300 and method == "GET":
                # version discovery answers "Multiple Choices"
                return (json.loads(raw) if raw else {}), dict(exc.headers)
            detail = raw.decode(errors="replace")[:1000]
            raise KeystoneError(f"{method} {path}: HTTP {exc.code}: {detail}",
                                status=exc.code) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise KeystoneError(f"{method} {path}: {exc}") from exc

    def request(self, method: str, path: str, body: object = None, *,
                token: str | None = None,
                timeout: float | None = None) -> dict:
        """Send one request; return the decoded JSON body ({} if empty).

        Without *token* it goes unauthenticated, except that paths other
        than ``/`` and ``/v3`` carry the bootstrap admin's system-scoped
        token (:meth:`admin_token`).  Raises :class:`KeystoneError`
        (``status`` set for HTTP errors) on any failure.
        """
        if token is None and path.rstrip("/") not in ("", "/v3"):
            token = self.admin_token()
        return self._send(method, path, body, token, timeout)[0]

    def token(self, username: str, password: str, *,
              project: str | None = None, system: bool = False,
              domain: str = "Default") -> str:
        """Issue a token for a user of *domain* (by name); return it.

        Scoped to *project* (a name in *domain*), or to the system with
        *system*, or unscoped.
        """
        auth: dict[str, object] = {"identity": {
            "methods": ["password"],
            "password": {"user": {"name": username,
                                  "domain": {"name": domain},
                                  "password": password}}}}
        if system:
            auth["scope"] = {"system": {"all": True}}
        elif project:
            auth["scope"] = {"project": {"name": project,
                                         "domain": {"name": domain}}}
        _, headers = self._send("POST", "/v3/auth/tokens", {"auth": auth},
                                None, None)
        token = {k.lower(): v for k, v in headers.items()}.get(
            "x-subject-token")
        if not token:
            raise KeystoneError("POST /v3/auth/tokens: no X-Subject-Token")
        return token

    def admin_token(self) -> str:
        """The bootstrap admin's system-scoped token (issued once)."""
        if self._admin_token is None:
            self._admin_token = self.token("admin", self.admin_password,
                                           system=True)
        return self._admin_token

    def catalog(self, token: str) -> list[dict]:
        """Return the service catalog that comes with *token*."""
        return self._send("GET", "/v3/auth/catalog", None, token,
                          None)[0]["catalog"]

    def _find(self, collection: str, name: str, **query: str) -> str | None:
        qs = urllib.parse.urlencode(dict(query, name=name))
        items = self.request("GET", f"/v3/{collection}?{qs}")[collection]
        return items[0]["id"] if items else None

    def ensure_project(self, name: str, domain_id: str = "default") -> str:
        """Return the id of project *name*, creating it if needed."""
        found = self._find("projects", name, domain_id=domain_id)
        if found:
            return found
        return self.request("POST", "/v3/projects", {"project": {
            "name": name, "domain_id": domain_id,
            "description": "pxefilterd test"}})["project"]["id"]

    def ensure_role(self, name: str) -> str:
        """Return the id of role *name*, creating it if needed."""
        found = self._find("roles", name)
        if found:
            return found
        return self.request("POST", "/v3/roles",
                            {"role": {"name": name}})["role"]["id"]

    def create_user(self, name: str, password: str,
                    domain_id: str = "default") -> str:
        """Create an enabled user; return its id."""
        return self.request("POST", "/v3/users", {"user": {
            "name": name, "password": password, "domain_id": domain_id,
            "enabled": True}})["user"]["id"]

    def grant(self, role: str, user_id: str, project_id: str) -> None:
        """Give *user_id* the role named *role* on *project_id*."""
        role_id = self.ensure_role(role)
        self.request("PUT", f"/v3/projects/{project_id}/users/{user_id}"
                     f"/roles/{role_id}")

    def add_user(self, name: str, password: str, *, project: str,
                 roles: tuple[str, ...]) -> str:
        """Create user *name* with *roles* on *project* (created if needed);
        return the user id."""
        project_id = self.ensure_project(project)
        user_id = self.create_user(name, password)
        for role in roles:
            self.grant(role, user_id, project_id)
        return user_id

    def ensure_region(self, region: str) -> None:
        """Create *region* unless it exists."""
        try:
            self.request("GET", f"/v3/regions/{region}")
        except KeystoneError as exc:
            if exc.status != 404:
                raise
            self.request("POST", "/v3/regions", {"region": {"id": region}})

    def register_service(self, service_type: str, name: str,
                         endpoints: dict[str, str], *,
                         region: str | None = None) -> str:
        """Create a service with one endpoint per interface; return its id.

        *endpoints* maps an interface (``public``, ``internal``, ``admin``)
        to its URL; an interface left out has no endpoint.
        """
        region = region or self.region
        self.ensure_region(region)
        service_id = self.request("POST", "/v3/services", {"service": {
            "type": service_type, "name": name,
            "enabled": True}})["service"]["id"]
        for interface, url in endpoints.items():
            self.request("POST", "/v3/endpoints", {"endpoint": {
                "service_id": service_id, "interface": interface,
                "url": url, "region_id": region, "enabled": True}})
        return service_id


def ironic_auth_conf(keystone: KeystoneService, username: str,
                     password: str, *, service_project: str = "service",
                     tls: TlsFiles | None = None) -> str:
    """Return ``extra_conf`` that puts an ironic behind *keystone*.

    - ``auth_strategy = keystone``: keystonemiddleware checks every token,
      with the user *username* of project *service_project* (it needs the
      ``service`` role, or ``admin``, to validate tokens; it finds keystone
      through the public identity endpoint);
    - ``rbac_service_role_elevated_access``: a user with the ``service``
      role in *service_project* reads every node and port, as ironic's
      other services do (ironic's scoped defaults otherwise show a project
      only the nodes it owns or leases: an empty list, not an error);
    - *tls*: ironic serves HTTPS with that certificate.  Keystone's own CA
      (if it serves TLS) is what keystonemiddleware trusts.
    """
    lines = [
        "[DEFAULT]",
        "auth_strategy = keystone",
        "rbac_service_role_elevated_access = true",
        f"rbac_service_project_name = {service_project}",
        "",
        "[keystone_authtoken]",
        "auth_type = password",
        f"auth_url = {keystone.auth_url}",
        f"www_authenticate_uri = {keystone.url}",
        f"username = {username}",
        f"password = {password}",
        f"project_name = {service_project}",
        "user_domain_name = Default",
        "project_domain_name = Default",
        f"region_name = {keystone.region}",
        "interface = public",
    ]
    if keystone.tls:
        lines.append(f"cafile = {keystone.tls.ca_cert}")
    if tls:
        lines += ["", "[api]", "enable_ssl_api = true",
                  f"cert_file = {tls.cert}", f"key_file = {tls.key}"]
    return "\n".join(lines) + "\n"
