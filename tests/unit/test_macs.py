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


IB_ID = 'ff:00:00:00:00:00:02:00:00:02:c9:00:00:02:c9:03:00:0a:0b:01'


@pytest.mark.parametrize('value, expected', [
    (IB_ID, 'id:' + IB_ID),
    (IB_ID.upper(), 'id:' + IB_ID),
    ('id:' + IB_ID, 'id:' + IB_ID),
    ('ID:01:02', 'id:01:02'),
    ('01:02', 'id:01:02'),
    ('ff', None),                      # one octet: a hardware type only
    ('ff0000000000', None),            # dnsmasq would read ASCII
    ('ff-00-01', None),
    ('ff:00:1', None),
    ('ff:00:01,ignore', None),
    ('ff:00:01\n', None),
    (':'.join(['ab'] * 64), 'id:' + ':'.join(['ab'] * 64)),
    (':'.join(['ab'] * 65), None),
    (None, None), (42, None), ('', None),
])
def test_client_ids_are_normalised_or_refused(value, expected):
    assert macs.normalize_client_id(value) == expected


def test_a_key_is_a_mac_or_a_prefixed_client_id():
    assert macs.normalize_key('52-54-00-00-00-0A') == '52:54:00:00:00:0a'
    assert macs.normalize_key('id:01:02') == 'id:01:02'
    assert macs.normalize_key('01:02') is None      # ambiguous without id:
    assert macs.is_client_id('id:01:02')
    assert not macs.is_client_id('52:54:00:00:00:0a')
