from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

GROUP = 'ironic'

opts = [
    cfg.IntOpt('api_retries', default=3, min=0, max=100,
               help='How many times a failed request to ironic is retried '
                    '(with exponential backoff) within one synchronisation.'),
    cfg.FloatOpt('api_retry_interval', default=0.5, min=0.0, max=60.0,
                 help='First backoff interval in seconds between retries.'),
    cfg.IntOpt('page_size', default=1000, min=1, max=100000,
               help='Items requested per page of a listing (ironic caps it '
                    'at its [api] max_limit, 1000 by default); every page '
                    'is followed.'),
]


def register_opts(conf):
    conf.register_opts(opts, group=GROUP)
    ks_loading.register_session_conf_options(conf, GROUP)
    ks_loading.register_auth_conf_options(conf, GROUP)
    ks_loading.register_adapter_conf_options(conf, GROUP)
    conf.set_default('service_type', 'baremetal', group=GROUP)
    conf.set_default('timeout', 10, group=GROUP)
    conf.set_default('valid_interfaces', ['internal', 'public'], group=GROUP)


def list_opts():
    """Options of the group for the sample config, keystoneauth ones too."""
    return (opts
            + ks_loading.get_session_conf_options()
            + ks_loading.get_auth_common_conf_options()
            + ks_loading.get_auth_plugin_conf_options('password')
            + ks_loading.get_adapter_conf_options())
