"""MAC address validation: the only gate between untrusted text and a file.

Everything that reaches the hostsdir (a file name or a file's content) passes
through :func:`normalize_mac` first.  dnsmasq reads the MAC case-insensitively,
but file names are case-sensitive and dnsmasq silently never matches dashed
MACs, so one canonical form (lowercase, colon separated) is the only one we
ever write.
"""

import re

#: The dnsmasq wildcard that matches every MAC; used for the unknown policy.
WILDCARD = '*:*:*:*:*:*'

# Six octets, one separator used throughout.  fullmatch() is used below: a
# plain match with '$' would accept a trailing newline.
_MAC_RE = re.compile(r'[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}'
                     r'(?:\1[0-9A-Fa-f]{2}){4}')


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
