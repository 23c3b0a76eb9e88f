from oslo_config import cfg

GROUP = 'pxe_filter'

opts = [
    cfg.StrOpt('driver', default='dnsmasq', choices=['dnsmasq', 'noop'],
               help='PXE filter driver.  "noop" disables filtering: '
                    'pxefilterd touches neither the hostsdir nor dnsmasq.'),
    cfg.IntOpt('sync_period', default=15, min=0, max=86400, mutable=True,
               help='Seconds between full synchronisations with the port '
                    'list of ironic.  0 disables the periodic full sync '
                    '(the inspection poll still runs).'),
    cfg.FloatOpt('inspection_poll_interval', default=1.0, min=0.0,
                 max=3600.0, mutable=True,
                 help='Seconds between the light polls of the nodes under '
                      'inspection (two small filtered requests); a change '
                      'is applied at once, without waiting for the full '
                      'sync.  0 disables the poll.'),
    cfg.BoolOpt('deny_unknown_macs', default=False, mutable=True,
                help='Deny MACs that ironic does not know, even while a '
                     'node is being inspected.'),
    cfg.BoolOpt('auto_discovery', default=False, mutable=True,
                help='Allow MACs that ironic does not know at all times, '
                     'so that new machines can be discovered.  Cannot be '
                     'combined with deny_unknown_macs.'),
    cfg.ListOpt('supported_inspect_interfaces',
                default=['agent', 'inspector'],
                help='Inspect interfaces that need PXE (in-band inspection). '
                     'Nodes inspected with another interface are not '
                     'allowed to boot.'),
    cfg.IntOpt('max_stale_seconds', default=0, min=0, max=31536000,
               mutable=True,
               help='When no synchronisation with ironic has succeeded for '
                    'this many seconds, fail closed: deny every MAC and the '
                    'unknown ones until ironic answers again.  0 keeps the '
                    'last applied state forever.'),
]


def register_opts(conf):
    conf.register_opts(opts, group=GROUP)
