"""Entry point for oslo-config-generator (``oslo.config.opts``)."""

from pxefilterd.conf import default
from pxefilterd.conf import dnsmasq
from pxefilterd.conf import ironic
from pxefilterd.conf import metrics
from pxefilterd.conf import pxe_filter


def list_opts():
    return [
        ('DEFAULT', default.opts),
        (pxe_filter.GROUP, pxe_filter.opts),
        (dnsmasq.GROUP, dnsmasq.opts),
        (ironic.GROUP, ironic.list_opts()),
        (metrics.GROUP, metrics.opts),
    ]
