from oslo_config import cfg

opts = [
    cfg.StrOpt('rootwrap_config',
               default='/etc/pxefilterd/rootwrap.conf',
               help='Path to the rootwrap configuration file used by the '
                    'default root_helper.'),
    cfg.StrOpt('root_helper',
               default='sudo pxefilterd-rootwrap $rootwrap_config',
               help='Command prefix that runs the dnsmasq start, stop and '
                    'reload commands as root.  Set it to an empty value to '
                    'run them directly (when pxefilterd already runs as '
                    'root, e.g. in a container).'),
    cfg.StrOpt('control_socket',
               default='/run/pxefilterd/control.sock',
               help='Unix socket on which the daemon answers '
                    '"pxefilterd-ctl explain" and "status" (read-only; mode '
                    '0660: its user, control_socket_group and root may '
                    'ask).  The shipped unit creates /run/pxefilterd '
                    '(RuntimeDirectory=).  Empty: not served; the commands '
                    'then ask ironic and read the hostsdir themselves.'),
    cfg.StrOpt('control_socket_group',
               default='pxefilterd-operators',
               help='Group given the control socket: its members may use '
                    '"pxefilterd-ctl explain" and "status" against the '
                    'daemon.  Not the daemon\'s own group, which may read '
                    'pxefilterd.conf and the ironic credentials in it.  The '
                    'daemon must be a member (the shipped unit has '
                    'SupplementaryGroups=pxefilterd-operators), else the '
                    'socket is not served and an error says why.  If no such '
                    'group exists, the socket keeps the daemon\'s group and a '
                    'warning says so; empty: the daemon\'s group.'),
]


def register_opts(conf):
    conf.register_opts(opts)
