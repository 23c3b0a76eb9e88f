#!/bin/bash
# Install everything pxefilterd's tests, demo and benchmark need on a fresh
# Debian 12 machine (run as root): Debian packages, a venv with pxefilterd
# and tox, and a separate venv with a real ironic.  Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
IRONIC_VENV=${PXEFILTERD_IRONIC_VENV:-$REPO/.venv-ironic}

log() { printf '[setup] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs Debian packages and uses network namespaces)" >&2
    exit 1
fi

need_apt=0
for bin in dnsmasq ip dhclient shellcheck systemd-analyze python3; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || [ -x "/sbin/$bin" ] || need_apt=1
done
if [ "$need_apt" -eq 1 ]; then
    log "installing Debian packages (dnsmasq-base, iproute2, isc-dhcp-client, shellcheck, systemd)"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq
    # dnsmasq-base: the dnsmasq binary without the system service; pxefilterd
    # and the tests run their own instances.
    timeout 900 apt-get install -y -qq --no-install-recommends \
        dnsmasq-base iproute2 isc-dhcp-client shellcheck systemd procps \
        python3-venv >/dev/null
fi

if [ ! -x .venv/bin/tox ] || [ ! -x .venv/bin/uv ]; then
    log "creating .venv (pxefilterd + tox)"
    python3 -m venv .venv
    timeout 900 .venv/bin/pip install -q --upgrade pip
    timeout 900 .venv/bin/pip install -q 'tox>=4' tox-uv -r requirements.txt \
        -r test-requirements.txt
fi
timeout 900 .venv/bin/pip install -q -e .

if [ ! -x "$IRONIC_VENV/bin/ironic" ]; then
    log "creating $IRONIC_VENV (ironic from PyPI, for integration tests and the demo)"
    python3 -m venv "$IRONIC_VENV"
    timeout 900 "$IRONIC_VENV/bin/pip" install -q \
        ironic==39.0.0 openstacksdk==4.22.0 python-ironicclient==6.3.0
fi
log "ready: dnsmasq $(/usr/sbin/dnsmasq --version | head -n 1 | awk '{print $3}'), ironic venv $IRONIC_VENV"
