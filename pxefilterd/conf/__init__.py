"""Configuration options, one module per group.  See :mod:`.opts`."""

import os

from oslo_config import cfg

from pxefilterd.conf import default
from pxefilterd.conf import dnsmasq
from pxefilterd.conf import ironic
from pxefilterd.conf import metrics
from pxefilterd.conf import pxe_filter

CONF = cfg.CONF

#: The one file read when the command line names none.
DEFAULT_CONFIG_FILE = '/etc/pxefilterd/pxefilterd.conf'

_MODULES = (default, pxe_filter, dnsmasq, ironic, metrics)


def register_opts(conf):
    """Register every pxefilterd option on ``conf`` (idempotent)."""
    for module in _MODULES:
        module.register_opts(conf)


def config_sources():
    """Return the ``default_config_files``/``default_config_dirs`` keyword
    arguments for parsing pxefilterd's configuration.

    Only what the command line names is read (``--config-file``,
    ``--config-dir``); without ``--config-file``, only
    :data:`DEFAULT_CONFIG_FILE` if it exists and this user may read it.
    oslo.config's own defaults would also read ``~/.pxefilterd/``, ``~/``
    and ``~/.pxefilterd/pxefilterd.conf.d/`` (the latter even with
    ``--config-file``): the
    daemon user's home is its state directory, which it owns, so it could
    configure its own (root-started) daemon.
    """
    # Unreadable (an operator, not in pxefilterd's group): every option
    # has its default, which is what pxefilterd-ctl explain and status need
    # to ask the daemon.
    files = ([DEFAULT_CONFIG_FILE] if os.access(DEFAULT_CONFIG_FILE, os.R_OK)
             and os.path.isfile(DEFAULT_CONFIG_FILE) else [])
    return {'default_config_files': files, 'default_config_dirs': []}


def policy_options(conf):
    """Return the :class:`pxefilterd.policy.Options` of ``[pxe_filter]``.

    :raises ValueError: the options contradict each other.
    """
    from pxefilterd import policy
    pf = conf.pxe_filter
    if pf.auto_discovery and pf.deny_unknown_macs:
        raise ValueError('[pxe_filter] auto_discovery and deny_unknown_macs '
                         'cannot both be True')
    return policy.Options(
        deny_unknown_macs=pf.deny_unknown_macs,
        auto_discovery=pf.auto_discovery,
        supported_interfaces=frozenset(pf.supported_inspect_interfaces),
        shards=frozenset(pf.shard),
        conductor_groups=frozenset(pf.conductor_group),
        # Sparse records lean on reloads: a SIGHUP of deny_unknown_macs to
        # False must give every port its deny record before the wildcard
        # allows, too many files for dnsmasq's inotify queue without one,
        # and only a reload drops the deny records of MACs once allowed.
        sparse_records=bool(conf.dnsmasq_pxe_filter.dnsmasq_reload_command
                            or conf.dnsmasq_pxe_filter.dnsmasq_child_command))


register_opts(CONF)
