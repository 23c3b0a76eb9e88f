"""Configuration options, one module per group.  See :mod:`.opts`."""

from oslo_config import cfg

from pxefilterd.conf import default
from pxefilterd.conf import dnsmasq
from pxefilterd.conf import ironic
from pxefilterd.conf import metrics
from pxefilterd.conf import pxe_filter

CONF = cfg.CONF

_MODULES = (default, pxe_filter, dnsmasq, ironic, metrics)


def register_opts(conf):
    """Register every pxefilterd option on ``conf`` (idempotent)."""
    for module in _MODULES:
        module.register_opts(conf)


register_opts(CONF)
