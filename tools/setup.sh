#!/bin/bash
# Install everything pxefilterd's tests, demo and benchmark need on a fresh
# Debian 12 machine (run as root): Debian packages, a venv with pxefilterd
# and tox, and separate venvs with a real ironic and a real keystone, each
# installed from its committed pins (pins/*.txt).
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
IRONIC_VENV=${PXEFILTERD_IRONIC_VENV:-$REPO/.venv-ironic}
KEYSTONE_VENV=${PXEFILTERD_KEYSTONE_VENV:-$REPO/.venv-keystone}

log() { printf '[setup] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs Debian packages and uses network namespaces)" >&2
    exit 1
fi

# dnsmasq-base: the dnsmasq binary without the system service; pxefilterd
# and the tests run their own instances.  qemu-system-x86, seabios,
# ipxe-qemu, ovmf, ipxe: virtual machines with real PXE firmware (BIOS and
# UEFI) in the integration tests, the demo and the benchmark.
# systemd-container, debootstrap: the Debian 12 guest with systemd as PID 1
# in which tests/integration/test_systemd.py runs the README's install.
# debootstrap, cpio, zstd: the inspection ramdisk (tools/ramdisk/build.sh)
# the VMs of tests/integration/test_inspection.py boot.
# podman, runc: the container images of tests/integration/test_containers.py
# (Debian 12's podman fails here with its default runtime, crun).
PACKAGES="dnsmasq-base iproute2 isc-dhcp-client shellcheck systemd procps
python3-venv qemu-system-x86 seabios ipxe-qemu ovmf ipxe systemd-container
debootstrap cpio zstd podman runc"
missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' \
        || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    log "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    timeout 900 apt-get install -y -qq --no-install-recommends $missing \
        >/dev/null
fi

# Every venv is installed from a committed, complete pin set (pins/*.txt,
# made from pins/*.in by tools/refresh-pins.sh): a fresh clone resolves
# exactly what was tested, on any day.  `uv pip sync` also brings an
# existing venv back to its pins (and removes what they do not list); it
# takes a fraction of a second when nothing changed.
pin() { grep -m1 "^$1==" pins/dev.txt; }

# venv_sync VENV PINS: VENV (created from the system python3 if missing)
# holding exactly the packages of PINS.
venv_sync() {
    local venv=$1 pins=$2
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    timeout 900 .venv/bin/uv pip sync -q --python "$venv/bin/python" "$pins"
}

# venv_check VENV WHAT COMMAND...: COMMAND (run in VENV) must succeed, or
# setup fails here -- naming the installed versions -- instead of the
# tests failing later in a way that points nowhere near the install.
venv_check() {
    local venv=$1 what=$2 out
    shift 2
    if ! out=$(timeout 120 "$@" 2>&1); then
        printf '[setup] %s in %s is broken: "%s" failed:\n' "$what" "$venv" "$*" >&2
        printf '%s\n' "$out" | tail -n 8 >&2
        printf '[setup] installed there: %s\n' \
            "$(.venv/bin/uv pip freeze -q --python "$venv/bin/python" | tr '\n' ' ')" >&2
        echo "[setup] the pins are in pins/*.txt; to move them on purpose: bash tools/refresh-pins.sh (CONTRIBUTING.md)" >&2
        exit 1
    fi
}

if [ ! -x .venv/bin/uv ] || [ "$(.venv/bin/uv --version | awk '{print $2}')" != "$(pin uv | cut -d= -f3)" ]; then
    log "creating .venv ($(pin uv))"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    # uv itself, at its pinned version, is the only package pip resolves.
    timeout 900 .venv/bin/python -m pip install -q "$(pin uv)"
fi
# pxefilterd itself and harness/ (the test harness, the demo and
# pxefilterd-bench: development only, never part of "pip install ."),
# editable, beside the pins; their build back-ends (pbr, setuptools) are
# held to the pins too.
printf -- '-e .\n-e ./harness\n' | timeout 900 .venv/bin/uv pip sync -q --python .venv/bin/python \
    --build-constraint pins/dev.txt pins/dev.txt -
venv_check .venv "the project venv" .venv/bin/uv pip check -q --python .venv/bin/python
venv_check .venv "pxefilterd" .venv/bin/python -c "import pxefilterd.cmd.daemon, pxefilterd.cmd.ctl"

# The real ironic (integration tests, the demo, the benchmark) and the real
# keystone (tests/integration/test_keystone.py, ~140 MB).
venv_sync "$IRONIC_VENV" pins/ironic.txt
venv_check "$IRONIC_VENV" ironic "$IRONIC_VENV/bin/ironic" --version
venv_sync "$KEYSTONE_VENV" pins/keystone.txt
venv_check "$KEYSTONE_VENV" keystone "$KEYSTONE_VENV/bin/keystone-manage" --version
log "ready: dnsmasq $(/usr/sbin/dnsmasq --version | head -n 1 | awk '{print $3}'), $(grep -m1 '^ironic==' pins/ironic.txt) in $IRONIC_VENV, $(grep -m1 '^keystone==' pins/keystone.txt) in $KEYSTONE_VENV"
