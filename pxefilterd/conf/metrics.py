from oslo_config import cfg

GROUP = 'metrics'

opts = [
    cfg.BoolOpt('enabled', default=False,
                help='Serve Prometheus metrics over HTTP.'),
    cfg.HostAddressOpt('listen_address', default='127.0.0.1',
                       help='Address the metrics endpoint listens on.'),
    cfg.PortOpt('listen_port', default=9475,
                help='Port the metrics endpoint listens on.'),
]


def register_opts(conf):
    conf.register_opts(opts, group=GROUP)
