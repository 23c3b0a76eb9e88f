"""The inspection ramdisk (ironic-python-agent on Debian 12), built once per
set of inputs and cached.

``tools/ramdisk/build.sh`` builds it (debootstrap from the machine's Debian
mirror, the agent from ``pins/ipa.txt``, one zstd cpio initramfs plus the
Debian cloud kernel; see the script).  :func:`ensure` returns the cached
build whose key matches the current inputs -- the SHA-256 of the build
script, the ramdisk's ``/init`` and ``pins/ipa.txt`` (the package list and
the suite are in the script) -- and builds it first when there is none, so
CI rebuilds only when an input changes.

The cache lives in :data:`CACHE_DIR` (``$PXEFILTERD_RAMDISK_CACHE``
overrides it), one directory per key; a lock file serialises builders
(parallel test workers) and a finished build replaces older keys'.

``python -m pxefilterd_harness.ramdisk`` builds (if needed) and prints the
paths, the build time and the sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CACHE_DIR = "/var/cache/pxefilterd-tests/ramdisk"
#: Files of the repository whose content makes the key, relative to it.
INPUTS = ("tools/ramdisk/build.sh", "tools/ramdisk/init", "pins/ipa.txt")
#: Debian packages the build needs on the host.
BUILD_PACKAGES = ("debootstrap", "cpio", "zstd")
#: A cold build (debootstrap, kernel, agent wheels, compression) took
#: about 3 minutes here; this is the limit, for a slow mirror and a
#: loaded machine.
BUILD_TIMEOUT = 1800.0


class RamdiskError(RuntimeError):
    """The ramdisk could not be built (the build's output tail attached)."""


@dataclasses.dataclass(frozen=True)
class Ramdisk:
    """A finished build: its files and what ``build.json`` says."""

    key: str
    directory: Path
    kernel: Path
    initramfs: Path
    info: dict
    built_now: bool = False

    def describe(self) -> str:
        """One line: kernel, sizes, build time."""
        mib = 1024 * 1024
        return ("ramdisk %s: kernel %s (%.1f MiB), initramfs %.1f MiB "
                "(root %.0f MiB unpacked), built in %.0f s%s"
                % (self.key[:12], self.info.get("kernel"),
                   self.info.get("vmlinuz_bytes", 0) / mib,
                   self.info.get("initramfs_bytes", 0) / mib,
                   self.info.get("root_bytes", 0) / mib,
                   self.info.get("seconds", 0),
                   " (now)" if self.built_now else " (cached)"))


def repo_root() -> Path | None:
    """The source checkout holding ``tools/ramdisk/build.sh``, found upwards
    from this file; ``None`` for an installed package without it."""
    for parent in Path(__file__).resolve().parents:
        if (parent / INPUTS[0]).is_file():
            return parent
    return None


def inputs_key(root: Path | None = None) -> str:
    """SHA-256 over the names and contents of :data:`INPUTS`.

    Raises :class:`RamdiskError` when the checkout or an input is missing.
    """
    root = root or repo_root()
    if root is None:
        raise RamdiskError("no source checkout with tools/ramdisk/build.sh")
    digest = hashlib.sha256()
    for name in INPUTS:
        try:
            data = (root / name).read_bytes()
        except OSError as exc:
            raise RamdiskError(f"ramdisk input missing: {exc}") from exc
        digest.update(name.encode() + b"\0" + data + b"\0")
    return digest.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("PXEFILTERD_RAMDISK_CACHE") or CACHE_DIR)


def cached(key: str | None = None) -> Ramdisk | None:
    """The finished build for *key* (default: the current inputs), or
    ``None``."""
    key = key or inputs_key()
    directory = cache_dir() / key
    try:
        info = json.loads((directory / "build.json").read_text())
    except (OSError, ValueError):
        return None
    kernel, initramfs = directory / "vmlinuz", directory / "initramfs"
    if not (kernel.is_file() and initramfs.is_file()):
        return None
    return Ramdisk(key, directory, kernel, initramfs, info)


def problem() -> str | None:
    """Why no ramdisk can be had here, or ``None``: fine when a build for
    the current inputs is cached, else root and the build tools are
    needed."""
    try:
        key = inputs_key()
    except RamdiskError as exc:
        return str(exc)
    if cached(key) is not None:
        return None
    if os.geteuid() != 0:
        return "building the inspection ramdisk needs root"
    missing = [p for p in ("debootstrap", "cpio", "zstd", "dpkg-deb")
               if shutil.which(p, path=os.environ.get("PATH", "") +
                               ":/usr/sbin:/sbin") is None]
    if missing:
        return ("cannot build the inspection ramdisk: %s not found (Debian "
                "packages %s)" % (", ".join(missing),
                                  " ".join(BUILD_PACKAGES)))
    return None


def ensure(*, timeout: float = BUILD_TIMEOUT, force: bool = False,
           say=None) -> Ramdisk:
    """Return the ramdisk for the current inputs, building it if needed.

    Concurrent callers wait for one build (a lock file in the cache
    directory).  *say* gets progress lines (the build's own lines go to
    ``build.log`` beside the build).  Raises :class:`RamdiskError` with
    the log's tail if the build fails or exceeds *timeout* seconds.
    """
    root = repo_root()
    key = inputs_key(root)
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = None if force else cached(key)
        if found is not None:
            return found
        if say:
            say("building the inspection ramdisk %s (a few minutes; cached "
                "in %s)" % (key[:12], base))
        log_path = base / (key + ".log")
        started = time.monotonic()
        with open(log_path, "wb") as log:
            try:
                res = subprocess.run(
                    ["bash", str(root / "tools/ramdisk/build.sh"),
                     str(base / key)],
                    stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, timeout=timeout, check=False)
            except subprocess.TimeoutExpired as exc:
                raise RamdiskError(
                    "ramdisk build timed out after %.0f s:\n%s"
                    % (timeout, _tail(log_path))) from exc
        if res.returncode != 0:
            raise RamdiskError("ramdisk build failed (exit %d):\n%s"
                               % (res.returncode, _tail(log_path)))
        found = cached(key)
        if found is None:
            raise RamdiskError("ramdisk build left no build.json:\n"
                               + _tail(log_path))
        shutil.move(str(log_path), str(found.directory / "build.log"))
        for old in base.iterdir():
            if old.is_dir() and old.name != key and len(old.name) == 64:
                shutil.rmtree(old, ignore_errors=True)
        if say:
            say("ramdisk built in %.0f s" % (time.monotonic() - started))
        return dataclasses.replace(found, built_now=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace")
                         .splitlines()[-lines:])
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pxefilterd_harness.ramdisk",
        description="Build (if needed) the cached inspection ramdisk and "
                    "print where it is.")
    parser.add_argument("--force", action="store_true",
                        help="build even if a build for these inputs is "
                             "cached")
    args = parser.parse_args(argv)
    why = None if args.force else problem()
    if why:
        print(why, file=sys.stderr)
        return 1
    try:
        disk = ensure(force=args.force, say=print)
    except RamdiskError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(disk.describe())
    print("kernel    %s" % disk.kernel)
    print("initramfs %s" % disk.initramfs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
