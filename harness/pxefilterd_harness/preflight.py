"""Checks that tell whether the real-service harness can run on this machine.

Each function returns ``None`` when the requirement is met, or a short
human-readable reason (suitable for ``pytest.skip``) when it is not.  Nothing
here has side effects.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: Environment variable naming the virtualenv that holds ironic.
IRONIC_VENV_ENV = "PXEFILTERD_IRONIC_VENV"
#: Used when :data:`IRONIC_VENV_ENV` is not set.
DEFAULT_IRONIC_VENV = "/opt/ironic-venv"
#: Environment variable naming the virtualenv that holds keystone.
KEYSTONE_VENV_ENV = "PXEFILTERD_KEYSTONE_VENV"
#: Used when :data:`KEYSTONE_VENV_ENV` is not set: ``.venv-keystone`` in the
#: source tree (where ``tools/setup.sh`` creates it).
DEFAULT_KEYSTONE_VENV = str(Path(__file__).resolve().parents[2]
                            / ".venv-keystone")

_SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


def ironic_venv() -> Path:
    """Return the ironic virtualenv path (env var or default); never raises."""
    return Path(os.environ.get(IRONIC_VENV_ENV) or DEFAULT_IRONIC_VENV)


def keystone_venv() -> Path:
    """Return the keystone virtualenv path (env var or default)."""
    return Path(os.environ.get(KEYSTONE_VENV_ENV) or DEFAULT_KEYSTONE_VENV)


def find_tool(name: str) -> str | None:
    """Return the absolute path of executable *name*, also searching sbin dirs.

    ``PATH`` of a non-login shell may lack ``/usr/sbin``; this looks there too.
    Returns ``None`` if the tool is not found.
    """
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def root_problem() -> str | None:
    """Return a reason if the current process is not root, else ``None``."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, raw sockets, dnsmasq)"
    return None


def dhcp_problem(need_dhclient: bool = False) -> str | None:
    """Return why namespaces + dnsmasq (+ dhclient) can't be used, or None.

    Checks root, ``ip`` (iproute2), ``/usr/sbin/dnsmasq`` (dnsmasq-base),
    ``pkill`` (procps) and, if *need_dhclient*, ``dhclient`` (isc-dhcp-client).
    """
    problem = root_problem()
    if problem:
        return problem
    tools = {"ip": "iproute2", "dnsmasq": "dnsmasq-base", "pkill": "procps"}
    if need_dhclient:
        tools["dhclient"] = "isc-dhcp-client"
    for tool, package in tools.items():
        if find_tool(tool) is None:
            return f"'{tool}' not found (install the Debian package {package})"
    if not os.path.exists("/proc/self/ns/net"):
        return "kernel without network namespace support"
    return None


def ironic_problem(venv: str | os.PathLike[str] | None = None) -> str | None:
    """Return why the standalone ironic cannot be run, or ``None``.

    Looks for ``bin/ironic``, ``bin/ironic-dbsync`` and ``bin/python`` in
    *venv* (default :func:`ironic_venv`).
    """
    venv = Path(venv) if venv else ironic_venv()
    if not venv.is_dir():
        return (f"ironic venv {venv} missing (set {IRONIC_VENV_ENV}; "
                "pip install ironic==39.0.0 into it)")
    for tool in ("ironic", "ironic-dbsync", "python"):
        if not os.access(venv / "bin" / tool, os.X_OK):
            return f"{venv}/bin/{tool} missing or not executable"
    return None


def keystone_problem(venv: str | os.PathLike[str] | None = None
                     ) -> str | None:
    """Return why a real keystone cannot be run, or ``None``.

    Looks for ``bin/keystone-manage`` and ``bin/python`` in *venv* (default
    :func:`keystone_venv`) and for keystone's WSGI application module.
    """
    venv = Path(venv) if venv else keystone_venv()
    if not venv.is_dir():
        return (f"keystone venv {venv} missing (set {KEYSTONE_VENV_ENV}, or "
                "run tools/setup.sh: pip install keystone==30.0.0 into it)")
    for tool in ("keystone-manage", "python"):
        if not os.access(venv / "bin" / tool, os.X_OK):
            return f"{venv}/bin/{tool} missing or not executable"
    if not any(venv.glob("lib/python3*/site-packages/keystone/server/"
                         "wsgi.py")):
        return f"keystone's WSGI application not found in {venv}"
    return None
