"""Small helpers shared by the harness's service and process wrappers."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
from typing import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """Return a ``preexec_fn`` that has the kernel send *sig* to the child
    when its parent dies.

    Keeps services and VMs from outliving a test runner that is SIGKILLed
    (no finalizers run then).  Linux ties this to the *thread* that forked,
    so start the child from a thread that lives as long as it should.
    """
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec


def reserve_port(port: int = 0) -> socket.socket:
    """Bind a socket to 127.0.0.1:*port* (0 = any free one), not listening.

    While it stays open no other process can bind the port without
    SO_REUSEADDR, and the kernel won't hand it out as an ephemeral port.
    Raises OSError if the port is taken.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


def tail(path: str | os.PathLike[str], lines: int = 40) -> str:
    """Return the last *lines* lines of a log file ('' if unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 300 * lines))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
