import string

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from pxefilterd import macs


@pytest.mark.parametrize('value,expected', [
    ('52:54:00:12:34:56', '52:54:00:12:34:56'),
    ('52:54:00:AB:cd:EF', '52:54:00:ab:cd:ef'),
    ('52-54-00-ab-cd-ef', '52:54:00:ab:cd:ef'),
    ('52-54-00:ab:cd:ef', None),          # mixed separators
    ('52:54:00:ab:cd:ef\n', None),        # trailing newline
    ('52:54:00:ab:cd:ef,ignore', None),   # option fragment
    ('52:54:00:ab:cd:ef,set:x', None),
    (' 52:54:00:ab:cd:ef', None),
    ('52:54:00:ab:cd', None),
    ('52:54:00:ab:cd:ef:01:02', None),    # 8 octets
    (':'.join(['aa'] * 20), None),        # 20 octets (InfiniBand)
    ('../../etc/passwd', None),
    ('52:54:00:ab:cd:e\x00', None),
    ('5254.00ab.cdef', None),
    ('525400abcdef', None),
    ('gg:54:00:ab:cd:ef', None),
    ('٥٢:54:00:ab:cd:ef', None),          # non-ASCII digits
    ('', None), (None, None), (42, None), (b'52:54:00:ab:cd:ef', None),
])
def test_normalize(value, expected):
    assert macs.normalize_mac(value) == expected


@settings(max_examples=3000)
@given(st.one_of(st.none(), st.integers(), st.binary(), st.text(),
                 st.text(alphabet=string.hexdigits + ':-,\n/.\x00 ')))
def test_normalize_output_is_always_canonical(value):
    result = macs.normalize_mac(value)
    if result is not None:
        assert len(result) == 17
        assert all(c in '0123456789abcdef:' for c in result)
        assert result.count(':') == 5
        assert macs.normalize_mac(result) == result


@settings(max_examples=2000)
@given(st.lists(st.integers(0, 255), min_size=6, max_size=6),
       st.sampled_from([':', '-']), st.booleans())
def test_normalize_accepts_every_real_mac(octets, sep, upper):
    text = sep.join('%02x' % o for o in octets)
    if upper:
        text = text.upper()
    assert macs.normalize_mac(text) == ':'.join('%02x' % o for o in octets)
