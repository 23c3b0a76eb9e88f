"""Address validation: the only gate between untrusted text and a file.

Everything that reaches the hostsdir (a file name or a file's content) passes
through :func:`normalize_mac` or :func:`normalize_client_id` first.  dnsmasq
reads the MAC case-insensitively, but file names are case-sensitive and
dnsmasq silently never matches dashed MACs, so one canonical form
(lowercase, colon separated) is the only one we ever write.

A record's *key* is a MAC, a client id (``id:`` + colon hex: InfiniBand
ports, whose DHCP requests carry no hardware address that dnsmasq could
compare with a MAC record), or :data:`WILDCARD` (every client ironic does
not know).
"""

import re

#: The dnsmasq wildcard that matches every MAC; used for the unknown policy.
WILDCARD = '*:*:*:*:*:*'

# Six octets, one separator used throughout.  fullmatch() is used below: a
# plain match with '$' would accept a trailing newline.
_MAC_RE = re.compile(r'[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}'
                     r'(?:\1[0-9A-Fa-f]{2}){4}')


#: The prefix of a client-id key, as dnsmasq writes it in dhcp-host.
CLIENT_ID_PREFIX = 'id:'
#: Longest client id accepted (bytes); IPoIB ids are 20.
MAX_CLIENT_ID = 64

# Colon-separated hex octets, at least two (one octet is a DHCP hardware
# type only).
_CLIENT_ID_RE = re.compile(r'[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){1,%d}'
                           % (MAX_CLIENT_ID - 1))


def normalize_client_id(value):
    """Return the key of a DHCP client id (``id:`` + lowercase colon hex),
    or None.

    Accepts colon-separated hex octets (2 to :data:`MAX_CLIENT_ID`), with or
    without the ``id:`` prefix, in any case: the form ironic keeps in a
    port's ``extra['client-id']``.  Hex without colons would be read by
    dnsmasq as an ASCII string and never match, so it is refused.
    """
    if not isinstance(value, str):
        return None
    if value[:3].lower() == CLIENT_ID_PREFIX:
        value = value[3:]
    if not _CLIENT_ID_RE.fullmatch(value):
        return None
    return CLIENT_ID_PREFIX + value.lower()


def normalize_key(value):
    """Return the key of a MAC or a client id (see the module doc), or
    None."""
    return normalize_mac(value) or (
        normalize_client_id(value)
        if isinstance(value, str) and value[:3].lower() == CLIENT_ID_PREFIX
        else None)


def is_client_id(key):
    """True for a (normalised) client-id key."""
    return key.startswith(CLIENT_ID_PREFIX)


def normalize_mac(value):
    """Return ``value`` as a lowercase colon-separated MAC, or None.

    Accepts exactly six hex octets separated consistently by ``:`` or ``-``,
    in any case.  Anything else (None, non-strings, other lengths, spaces,
    NUL, newlines, option fragments) returns None; this never raises.
    """
    if not isinstance(value, str):
        return None
    if not _MAC_RE.fullmatch(value):
        return None
    return value.lower().replace('-', ':')
