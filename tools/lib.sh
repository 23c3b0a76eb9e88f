# shellcheck shell=bash
# Shell functions shared by tools/guest-root.sh and tools/container-base.sh
# (sourced; each defines its own log()).

# The machine's Debian mirror, from its apt sources (deb822 first, then the
# one-line format): never a host name written into the repository.
mirror() {
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [ -z "$uri" ]; then
        uri=$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit} $1 == "deb" {print $3; exit}' \
            /etc/apt/sources.list 2>/dev/null || true)
    fi
    [ -n "$uri" ] || { log "no Debian mirror in the apt sources"; exit 1; }
    echo "$uri"
}

# A cache key: the first 16 hex digits of the SHA-256 of standard input.
key() { sha256sum | cut -c1-16; }
