#!/bin/bash
# Build, once, what tests/integration/test_systemd.py boots under
# systemd-nspawn (systemd as PID 1): a Debian 12 root, and the wheels the
# README's five-minute path installs in it (the guest has no network).
#
#   bash tools/guest-root.sh root     # prints the root's directory
#   bash tools/guest-root.sh wheels   # prints the wheel directory
#
# Both are cached under $PXEFILTERD_GUEST_CACHE (default
# /var/cache/pxefilterd-tests), each in a directory named by a hash of its
# inputs, so that a run rebuilds only what changed:
# - the root: the suite, the packages (systemd itself, and those of the
#   README's own "apt-get install" line, read from README.md, so the guest
#   holds exactly what the README tells an operator to install) and
#   ROOT_LAYOUT below;
# - the wheels: pins/guest.txt.
# Old entries are left in place; delete the cache directory to reclaim them.
# The Debian mirror is the machine's own (its apt sources), read here.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
CACHE=${PXEFILTERD_GUEST_CACHE:-/var/cache/pxefilterd-tests}
SUITE=bookworm
# The guest's host name, resolvable (sudo complains on every run otherwise).
GUEST_HOSTNAME=pxefilterd-guest
# Bump when what build_root does after debootstrap changes.
ROOT_LAYOUT=1

log() { printf '[guest-root] %s\n' "$*" >&2; }

# The packages the README's five-minute path has the operator install.
readme_packages() {
    sed -n '/^## Run it for real/,/^## /p' README.md \
        | grep -m1 -E '^ +apt-get install' \
        | sed -e 's/#.*//' -e 's/^ *apt-get install//' \
        | tr ' ' '\n' | grep -v -e '^-' -e '^$' | sort -u | tr '\n' ' '
}

# mirror, key
# shellcheck source=tools/lib.sh
. tools/lib.sh

build_root() {
    local packages include name dir tmp
    packages="systemd systemd-sysv dbus $(readme_packages)"
    include=$(echo "$packages" | tr ' ' '\n' | grep -v '^$' | sort -u | paste -sd, -)
    name="root-$SUITE-$(echo "$SUITE $include $ROOT_LAYOUT" | key)"
    dir=$CACHE/$name
    if [ -f "$dir/.complete" ]; then
        echo "$dir"
        return
    fi
    tmp=$CACHE/.$name.$$
    rm -rf "$tmp"
    log "debootstrap $SUITE ($include) into $dir (a few minutes, once)"
    timeout 1800 debootstrap --variant=minbase --include="$include" \
        "$SUITE" "$tmp" "$(mirror)" >"$tmp.log" 2>&1 \
        || { tail -n 20 "$tmp.log" >&2; rm -rf "$tmp"; exit 1; }
    rm -f "$tmp.log"
    echo "$GUEST_HOSTNAME" >"$tmp/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$GUEST_HOSTNAME" >"$tmp/etc/hosts"
    # No login prompt on the container's console.
    ln -sf /dev/null "$tmp/etc/systemd/system/console-getty.service"
    touch "$tmp/.complete"
    mv "$tmp" "$dir"
    echo "$dir"
}

build_wheels() {
    local name dir tmp
    name="wheels-$(key <pins/guest.txt)"
    dir=$CACHE/$name
    if [ -f "$dir/.complete" ]; then
        echo "$dir"
        return
    fi
    tmp=$CACHE/.$name.$$
    rm -rf "$tmp"
    log "building the wheels of pins/guest.txt into $dir (once)"
    timeout 900 "$REPO/.venv/bin/python" -m pip wheel -q --no-deps \
        -r pins/guest.txt -w "$tmp" >"$tmp.log" 2>&1 \
        || { tail -n 20 "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; exit 1; }
    rm -f "$tmp.log"
    touch "$tmp/.complete"
    mv "$tmp" "$dir"
    echo "$dir"
}

mkdir -p "$CACHE"
# One builder at a time (two test runs, or setup.sh and a test).
exec 9>"$CACHE/.lock"
flock 9
case ${1:-} in
    root) build_root ;;
    wheels) build_wheels ;;
    *) echo "usage: $0 root|wheels" >&2; exit 2 ;;
esac
