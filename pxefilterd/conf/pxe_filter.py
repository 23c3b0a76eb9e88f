from oslo_config import cfg

GROUP = 'pxe_filter'

opts = [
    cfg.StrOpt('driver', default='dnsmasq', choices=['dnsmasq', 'noop'],
               help='PXE filter driver.  "noop" disables filtering: '
                    'pxefilterd touches neither the hostsdir nor dnsmasq.'),
    cfg.IntOpt('sync_period', default=900, min=0, max=86400, mutable=True,
               help='Seconds between full listings of every port in '
                    'ironic.  The inspection poll and the change feeds '
                    'apply nearly every change within seconds; the full '
                    'listing is the backstop for what leaves no trace in '
                    'them: ports and nodes deleted while not inspected '
                    '(their MACs stay denied until it runs).  Each listing '
                    'costs ironic about 0.25 s of server time per 1000 '
                    'ports; listings are spaced further apart when needed '
                    'so that they take at most 2 % of its time (at 100k '
                    'ports: every ~19 minutes).  0 disables it after the '
                    'first one.  ironic-pxe-filter\'s option of the same '
                    'name (default 45) is its only synchronisation; copied '
                    'here, it still bounds how long any change takes.'),
    cfg.FloatOpt('inspection_poll_interval', default=1.0, min=0.0,
                 max=3600.0, mutable=True,
                 help='Seconds between inspection polls (the nodes in '
                      'inspecting and inspect wait) and, while a node is '
                      'inspected or auto_discovery is on, reads of the '
                      'change feeds (the newest ports, the latest port '
                      'updates).  0 disables the poll.'),
    cfg.FloatOpt('idle_poll_interval', default=1.5, min=0.0, max=3600.0,
                 mutable=True,
                 help='Seconds between inspection polls while no node is '
                      'inspected (and auto_discovery is off): at most how '
                      'long a node that starts inspection waits for '
                      'pxefilterd to see it.  Each poll costs ironic about '
                      '11 ms of '
                      'server time, and a fleet is idle most of the time.  '
                      'Never shorter than inspection_poll_interval; 0: the '
                      'same.'),
    cfg.IntOpt('port_fetches_per_poll', default=10, min=0, max=10000,
               mutable=True,
               help='Most per-node port listings per inspection poll: for '
                    'nodes that left inspection (to notice a deleted '
                    'node) and, with deny_unknown_macs, for the inspected '
                    'nodes in turn (to notice a port deleted from one).  '
                    'On SQLite each costs ironic a scan of its port table '
                    '(about 25 ms at 100k ports).'),
    cfg.BoolOpt('deny_unknown_macs', default=False, mutable=True,
                help='Deny MACs that ironic does not know, even while a '
                     'node is being inspected.'),
    cfg.BoolOpt('auto_discovery', default=False, mutable=True,
                deprecated_opts=[cfg.DeprecatedOpt('enabled',
                                                   group='auto_discovery')],
                help='Allow MACs that ironic does not know at all times, '
                     'so that new machines can be discovered.  Cannot be '
                     'combined with deny_unknown_macs.  ironic\'s '
                     '[auto_discovery] enabled is read as this option.'),
    cfg.ListOpt('supported_inspect_interfaces',
                default=['agent'], mutable=True,
                help='Inspect interfaces that need PXE (in-band inspection). '
                     'Nodes inspected with another interface are not '
                     'allowed to boot.  The default is ironic\'s: "agent" is '
                     'its only in-band inspect interface (an ironic that '
                     'still has the "inspector" interface of '
                     'ironic-inspector needs "agent,inspector").'),
    cfg.ListOpt('shard', default=[],
                help='Scope this filter to the nodes of these ironic shards '
                     '(one pxefilterd and dnsmasq per site): only their '
                     'inspections are allowed and count for the unknown-MAC '
                     'policy; ports of nodes in other shards are denied like '
                     'any node that is not inspected.  Empty: every shard.  '
                     'Needs ironic API 1.82.  The same name as nova\'s '
                     '[ironic] shard.'),
    cfg.ListOpt('conductor_group', default=[],
                help='Scope this filter to the nodes of these ironic '
                     'conductor groups (ironic\'s [conductor] '
                     'conductor_group; the default group is ""), like '
                     'shard.  With both set, a node must match both.  '
                     'Empty: every group.  Needs ironic API 1.46.'),
    cfg.IntOpt('max_stale_seconds', default=300, min=0, max=31536000,
               mutable=True,
               help='When no synchronisation with ironic has succeeded for '
                    'this many seconds, fail closed: deny every MAC and the '
                    'unknown ones until ironic answers again.  It bounds how '
                    'long a node that left inspection may still boot while '
                    'ironic cannot be read; failing closed also stops the '
                    'inspections under way, so it is well above a restart '
                    'of ironic or a few failed requests.  0 keeps the last '
                    'applied state forever.'),
]


def register_opts(conf):
    conf.register_opts(opts, group=GROUP)
