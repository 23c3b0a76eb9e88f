#!/bin/bash
# Make the base image container/Containerfile starts FROM available to
# podman without a registry: a minbase Debian 12 root (debootstrap, from
# the machine's own Debian mirror, read from its apt sources), imported and
# tagged with the exact name of the Containerfile's FROM line, so that the
# very same Containerfile builds offline here and online for users.
#
#   bash tools/container-base.sh        # prints the image name
#
# The root is cached under $PXEFILTERD_GUEST_CACHE (default
# /var/cache/pxefilterd-tests) in a directory named by a hash of its inputs
# (suite, variant, BASE_LAYOUT); the imported image carries that hash as a
# label and is imported again only when it differs.  An image of that name
# pulled from a registry (no such label) is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${PXEFILTERD_GUEST_CACHE:-/var/cache/pxefilterd-tests}
SUITE=bookworm
# Bump when what build_root does after debootstrap changes.
BASE_LAYOUT=1
IMAGE=$(awk 'toupper($1) == "FROM" {print $2; exit}' container/Containerfile)
LABEL=org.pxefilterd.base-root
PODMAN=(podman --runtime runc)

log() { printf '[container-base] %s\n' "$*" >&2; }

# mirror, key
# shellcheck source=tools/lib.sh
. tools/lib.sh

build_root() {
    local name=$1 dir=$CACHE/$1 tmp
    if [ -f "$dir/.complete" ]; then
        return
    fi
    tmp=$CACHE/.$name.$$
    rm -rf "$tmp"
    log "debootstrap --variant=minbase $SUITE into $dir (about a minute, once)"
    timeout 1800 debootstrap --variant=minbase "$SUITE" "$tmp" "$(mirror)" \
        >"$tmp.log" 2>&1 \
        || { tail -n 20 "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; exit 1; }
    rm -f "$tmp.log"
    # As slim as an image: no package cache, no package lists (the
    # Containerfile's apt-get update fetches them).
    rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
    touch "$tmp/.complete"
    mv "$tmp" "$dir"
}

[ -n "$IMAGE" ] || { log "no FROM line in container/Containerfile"; exit 1; }
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
name="base-$SUITE-$(echo "$SUITE minbase $BASE_LAYOUT" | key)"
have=$(timeout 60 "${PODMAN[@]}" image inspect --format "{{index .Labels \"$LABEL\"}}" \
    "$IMAGE" 2>/dev/null || true)
if [ "$have" = "$name" ]; then
    echo "$IMAGE"
    exit 0
fi
if [ -n "$(timeout 60 "${PODMAN[@]}" image ls -q "$IMAGE" 2>/dev/null)" ] && [ -z "$have" ]; then
    log "$IMAGE exists and was not imported here (pulled?): using it as is"
    echo "$IMAGE"
    exit 0
fi
build_root "$name"
log "importing $CACHE/$name as $IMAGE"
tar -C "$CACHE/$name" --exclude=./.complete -c . \
    | timeout 600 "${PODMAN[@]}" import --change "LABEL $LABEL=$name" \
        --change 'CMD ["bash"]' - "$IMAGE" >/dev/null
echo "$IMAGE"
