from oslo_config import cfg

GROUP = 'dnsmasq_pxe_filter'

opts = [
    cfg.StrOpt('dhcp_hostsdir', default='/var/lib/pxefilterd/dhcp-hostsdir',
               deprecated_opts=[cfg.DeprecatedOpt('dhcp_hostsdir',
                                                  group='pxe_filter')],
               help='The dnsmasq --dhcp-hostsdir that pxefilterd owns.  It '
                    'must exist, be writable by pxefilterd and readable by '
                    'the user dnsmasq runs as.  ironic-pxe-filter\'s '
                    '[pxe_filter] dhcp_hostsdir is read as this option.'),
    cfg.StrOpt('staging_dir', default='',
               help='Where files are written before being renamed into the '
                    'hostsdir; must be on the same filesystem.  Empty means '
                    'a sibling of the hostsdir named .<name>.staging.'),
    cfg.StrOpt('dhcp_hostsfile', default='',
               help='Optional base hosts file (give it to dnsmasq as '
                    '--dhcp-hostsfile).  When set, the full state is written '
                    'to this one file before dnsmasq starts and at every '
                    'compaction, and only changes since then are per-MAC '
                    'files: dnsmasq reads one file of N lines far faster '
                    'than N files (100k MACs: 0.07 s instead of 34 s at '
                    'start-up and SIGHUP).  Must be outside the hostsdir.'),
    cfg.BoolOpt('purge_dhcp_hostsdir', default=True,
                help='Remove every file from the hostsdir at start-up, '
                     'before the first synchronisation.'),
    cfg.StrOpt('dnsmasq_start_command', default='',
               help='Command run (through root_helper) after the first '
                    'successful synchronisation to start dnsmasq, e.g. '
                    '"systemctl --no-block start pxefilterd-dnsmasq.service" '
                    '(--no-block: that unit is ordered after pxefilterd, '
                    'which is not started until this returns).  Empty: '
                    'dnsmasq is managed elsewhere.  Commands with shell '
                    'expansions ($(...), $VAR) are expanded by /bin/sh as '
                    "pxefilterd's own user, and only the resulting argv is "
                    'run through root_helper; shell operators (; | && '
                    'redirections) are refused.'),
    cfg.StrOpt('dnsmasq_stop_command', default='',
               help='Command run (through root_helper) to stop dnsmasq when '
                    'pxefilterd exits or dies, e.g. '
                    '"systemctl stop pxefilterd-dnsmasq.service" or '
                    '"kill $(cat /run/pxefilterd-dnsmasq/dnsmasq.pid)".'),
    cfg.StrOpt('dnsmasq_reload_command', default='',
               help='Optional command that makes dnsmasq re-read the '
                    'hostsdir (SIGHUP), e.g. "systemctl reload '
                    'pxefilterd-dnsmasq.service".  Required to purge the '
                    'hostsdir while a dnsmasq started elsewhere is running.'),
    cfg.StrOpt('dnsmasq_child_command', default='',
               help='Run dnsmasq as a child process of pxefilterd with this '
                    'argv (all-in-one mode, e.g. in a container: '
                    '"/usr/sbin/dnsmasq --conf-file=/etc/pxefilterd/'
                    'dnsmasq.conf"; --keep-in-foreground is added unless '
                    'it is there).  It is started after the first '
                    'successful synchronisation, watched directly (no pid '
                    'file), started again if it dies, reloaded with SIGHUP, '
                    'stopped with SIGTERM when pxefilterd exits, and by the '
                    'guard process if pxefilterd dies (SIGKILL, OOM).  No '
                    'root_helper is used: pxefilterd must be allowed to run '
                    'dnsmasq (root in a container).  '
                    'Cannot be combined with the start, stop and reload '
                    'commands or dnsmasq_pid_file.  No shell: a plain argv.'),
    cfg.StrOpt('dnsmasq_pid_file', default='',
               help='The pid file of the dnsmasq that reads the hostsdir '
                    '(its --pid-file).  pxefilterd reads it about once a '
                    'second: when it names no running dnsmasq, the '
                    'hostsdir is re-asserted and dnsmasq is started again '
                    '(with backoff; after 5 failed starts in a row '
                    'pxefilterd exits non-zero).  It is also how status and '
                    'metrics tell whether dnsmasq really runs.  Empty: '
                    'the one the dnsmasq commands name (the start '
                    "command's --pid-file, or pid-file= in its "
                    '--conf-file, or in the ExecStart of its systemctl '
                    "unit; the stop or reload command's $(cat FILE) or "
                    'pkill -F FILE); when none does, dnsmasq is not '
                    'observed, and a warning says so at start-up.'),
    cfg.FloatOpt('command_timeout', default=30.0, min=0.1, max=3600.0,
                 help='Seconds after which a start, stop or reload command '
                      'is killed and counted as failed.'),
    cfg.IntOpt('max_burst', default=8000, min=1, max=1000000, mutable=True,
               help='Most files written at full speed while dnsmasq runs. '
                    'dnsmasq re-reads a file per inotify event and the '
                    'kernel queue holds 16384 events by default; when it '
                    'overflows dnsmasq silently loses updates.  A larger '
                    'change set is written and followed by the reload '
                    'command when one is configured, else paced at '
                    'burst_rate.'),
    cfg.IntOpt('burst_rate', default=2000, min=1, max=1000000, mutable=True,
               help='Files per second written beyond max_burst when no '
                    'reload command is configured.'),
    cfg.IntOpt('compaction_interval', default=60, min=0, max=100000,
               mutable=True,
               help='Minutes between compactions: the files of MACs that '
                    'ironic no longer has are removed and dnsmasq is '
                    'reloaded, freeing the records it keeps for them.  '
                    'Needs dnsmasq_reload_command; 0 disables it.'),
    cfg.IntOpt('compaction_threshold', default=1000, min=0, max=10000000,
               mutable=True,
               help='With deny_unknown_macs, dnsmasq is given a record only '
                    'for the MACs that may boot (a denied port is ignored '
                    'by the wildcard record); a MAC that may no longer '
                    'boot keeps a deny record until dnsmasq is reloaded, '
                    'since dnsmasq forgets a record only then.  As soon as '
                    'this many such records are left, they are removed '
                    'and dnsmasq is reloaded (besides compaction_interval). '
                    'Needs dnsmasq_reload_command; 0: only at '
                    'compaction_interval.'),
    cfg.FloatOpt('lock_wait', default=10.0, min=0.0, max=3600.0,
                 help='Seconds to wait for the hostsdir lock held by a '
                      'previous instance (or its guard) before giving up.'),
    cfg.BoolOpt('guard', default=True,
                help='Run a guard process that stops dnsmasq if pxefilterd '
                     'dies without running its exit path (SIGKILL, OOM).'),
    cfg.BoolOpt('watch_hostsdir', default=True,
                help='Watch the hostsdir and repair any file changed by '
                     'someone else.'),
]


def register_opts(conf):
    conf.register_opts(opts, group=GROUP)
