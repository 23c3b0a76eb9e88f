#!/bin/bash
# Install everything pxefilterd's tests, demo and benchmark need on a fresh
# Debian 12 machine (run as root): Debian packages (bindep.txt), a venv with pxefilterd
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

# apt_install PACKAGE...: install the Debian packages given (none: nothing).
apt_install() {
    [ "$#" -gt 0 ] || return 0
    log "installing Debian packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq
    timeout 900 apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The system packages are listed in bindep.txt (profile "test": dnsmasq,
# DHCP clients, qemu with BIOS and UEFI firmware, the systemd guest's and
# the ramdisk's tools, podman) and installed with bindep, which runs from
# .venv.
# So the one package needed to make that venv comes first, by name.
if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q 'ok installed'; then
    apt_install python3-venv
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

# bindep -b prints the missing packages of the profile, one a line, and
# exits 1 when there are some; any other status is an error (e.g. a
# bindep.txt it cannot parse).
rc=0
missing=$(timeout 120 .venv/bin/bindep --brief --file bindep.txt test) || rc=$?
# (bindep also exits 1, with a message on stdout, when it cannot read the
# file: anything but package names is an error too.)
if [ "$rc" -gt 1 ] || printf '%s\n' "$missing" | grep -qv '^[a-z0-9][a-z0-9+.-]*$\|^$'; then
    echo "setup.sh: bindep failed (status $rc) on bindep.txt: $missing" >&2
    exit 1
fi
# shellcheck disable=SC2086  # one word per package
apt_install $missing

# The real ironic (integration tests, the demo, the benchmark) and the real
# keystone (tests/integration/test_keystone.py, ~140 MB).
venv_sync "$IRONIC_VENV" pins/ironic.txt
venv_check "$IRONIC_VENV" ironic "$IRONIC_VENV/bin/ironic" --version
venv_sync "$KEYSTONE_VENV" pins/keystone.txt
venv_check "$KEYSTONE_VENV" keystone "$KEYSTONE_VENV/bin/keystone-manage" --version
log "ready: dnsmasq $(/usr/sbin/dnsmasq --version | head -n 1 | awk '{print $3}'), $(grep -m1 '^ironic==' pins/ironic.txt) in $IRONIC_VENV, $(grep -m1 '^keystone==' pins/keystone.txt) in $KEYSTONE_VENV"
