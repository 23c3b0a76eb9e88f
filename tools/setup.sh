#!/bin/bash
# Install everything pxefilterd's tests, demo and benchmark need on a fresh
# Debian 12 machine (run as root): Debian packages, a venv with pxefilterd
# and tox, and separate venvs with a real ironic and a real keystone.
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
PACKAGES="dnsmasq-base iproute2 isc-dhcp-client shellcheck systemd procps
python3-venv qemu-system-x86 seabios ipxe-qemu ovmf ipxe"
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

if [ ! -x .venv/bin/tox ] || [ ! -x .venv/bin/uv ]; then
    log "creating .venv (pxefilterd + tox)"
    python3 -m venv .venv
    timeout 900 .venv/bin/pip install -q uv
    timeout 900 .venv/bin/uv pip install -q --python .venv/bin/python \
        'tox>=4' tox-uv -r requirements.txt -r test-requirements.txt
fi
# pxefilterd itself and harness/ (the test harness, the demo and
# pxefilterd-bench: development only, never part of "pip install .").
timeout 900 .venv/bin/uv pip install -q --python .venv/bin/python \
    -e . -e ./harness

# venv_install VENV PACKAGE...: a venv of the system python3 with PACKAGEs,
# installed by uv (seconds; pip takes a minute or more for ironic or
# keystone).
venv_install() {
    local venv=$1
    shift
    python3 -m venv "$venv"
    timeout 900 .venv/bin/uv pip install -q --python "$venv/bin/python" "$@"
}

if [ ! -x "$IRONIC_VENV/bin/ironic" ]; then
    log "creating $IRONIC_VENV (ironic from PyPI, for integration tests and the demo)"
    venv_install "$IRONIC_VENV" \
        ironic==39.0.0 openstacksdk==4.22.0 python-ironicclient==6.3.0
fi
if [ ! -x "$KEYSTONE_VENV/bin/keystone-manage" ]; then
    # A real keystone (tests/integration/test_keystone.py): ~140 MB.
    log "creating $KEYSTONE_VENV (keystone from PyPI, for the keystone integration tests)"
    venv_install "$KEYSTONE_VENV" keystone==30.0.0
fi
log "ready: dnsmasq $(/usr/sbin/dnsmasq --version | head -n 1 | awk '{print $3}'), ironic venv $IRONIC_VENV, keystone venv $KEYSTONE_VENV"
