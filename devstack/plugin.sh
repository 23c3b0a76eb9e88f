#!/bin/bash
# shellcheck shell=bash
#
# DevStack plugin for pxefilterd: installs the daemon from $PXEFILTERD_DIR,
# configures it against DevStack's ironic (keystone), installs the rootwrap
# configuration, the sudoers rule and the two systemd units, and starts
# pxefilterd.service (which starts pxefilterd-dnsmasq.service itself once
# the hostsdir reflects ironic).
#
# Variables and functions not defined here come from DevStack
# (functions-common, lib/keystone, inc/python, inc/ini-config):
# shellcheck disable=SC2154

PXEFILTERD_XTRACE=$(set +o | grep xtrace)
set -o xtrace

PXEFILTERD_UNITS="pxefilterd.service pxefilterd-dnsmasq.service"

function pxefilterd_bin_dir {
    get_python_exec_prefix
}

function install_pxefilterd {
    # Our dnsmasq runs under pxefilterd-dnsmasq.service with port=0 and
    # bind-dynamic, so a distribution dnsmasq.service (DNS only by default)
    # does not get in its way.
    install_package dnsmasq sudo
    setup_develop "$PXEFILTERD_DIR"
}

function create_pxefilterd_user {
    if [[ "$PXEFILTERD_USER" == "$STACK_USER" ]]; then
        return
    fi
    if ! getent passwd "$PXEFILTERD_USER" >/dev/null; then
        sudo useradd --system --user-group --home-dir "$PXEFILTERD_STATE_DIR" \
            --no-create-home --shell /usr/sbin/nologin "$PXEFILTERD_USER"
    fi
}

function configure_pxefilterd_rootwrap {
    local bin_dir
    bin_dir=$(pxefilterd_bin_dir)
    sudo install -d -o root -g root -m 0755 \
        "$PXEFILTERD_CONF_DIR" "$PXEFILTERD_CONF_DIR/rootwrap.d"
    sudo install -o root -g root -m 0644 \
        "$PXEFILTERD_DIR/etc/pxefilterd/rootwrap.conf" \
        "$PXEFILTERD_CONF_DIR/rootwrap.conf"
    sudo install -o root -g root -m 0644 \
        "$PXEFILTERD_DIR/rootwrap.d/pxefilterd.filters" \
        "$PXEFILTERD_CONF_DIR/rootwrap.d/pxefilterd.filters"
    sudo sed -i "s|^filters_path=.*|filters_path=$PXEFILTERD_CONF_DIR/rootwrap.d|" \
        "$PXEFILTERD_CONF_DIR/rootwrap.conf"

    local tmp
    tmp=$(mktemp)
    echo "$PXEFILTERD_USER ALL = (root) NOPASSWD: $bin_dir/pxefilterd-rootwrap $PXEFILTERD_CONF_DIR/rootwrap.conf *" > "$tmp"
    chmod 0440 "$tmp"
    sudo visudo -c -f "$tmp"
    sudo chown root:root "$tmp"
    sudo mv "$tmp" /etc/sudoers.d/pxefilterd
}

function configure_pxefilterd_dnsmasq {
    local conf=$PXEFILTERD_CONF_DIR/dnsmasq.conf
    sudo install -o root -g root -m 0644 \
        "$PXEFILTERD_DIR/etc/pxefilterd/dnsmasq.conf" "$conf"
    sudo sed -i \
        -e "s|^interface=.*|interface=$PXEFILTERD_DNSMASQ_INTERFACE|" \
        -e "s|^bind-interfaces|bind-dynamic|" \
        -e "s|^dhcp-range=.*|dhcp-range=$PXEFILTERD_DHCP_RANGE|" \
        -e "s|^dhcp-hostsdir=.*|dhcp-hostsdir=$PXEFILTERD_HOSTSDIR|" \
        "$conf"
}

function configure_pxefilterd_systemd {
    local bin_dir
    bin_dir=$(pxefilterd_bin_dir)
    local unit
    for unit in $PXEFILTERD_UNITS; do
        sudo install -o root -g root -m 0644 \
            "$PXEFILTERD_DIR/systemd/$unit" "$SYSTEMD_DIR/$unit"
    done
    sudo sed -i \
        -e "s|^ExecStart=/usr/local/bin/pxefilterd |ExecStart=$bin_dir/pxefilterd |" \
        -e "s|--config-file /etc/pxefilterd/pxefilterd.conf|--config-file $PXEFILTERD_CONF_FILE|" \
        -e "s|^User=.*|User=$PXEFILTERD_USER|" \
        -e "s|^Group=.*|Group=$(id -gn "$PXEFILTERD_USER")|" \
        "$SYSTEMD_DIR/pxefilterd.service"
    sudo sed -i \
        -e "s|--conf-file=/etc/pxefilterd/dnsmasq.conf|--conf-file=$PXEFILTERD_CONF_DIR/dnsmasq.conf|" \
        "$SYSTEMD_DIR/pxefilterd-dnsmasq.service"

    # The hostsdir, readable by dnsmasq's unprivileged user.
    sudo install -d -o "$PXEFILTERD_USER" -m 0755 \
        "$PXEFILTERD_STATE_DIR" "$PXEFILTERD_HOSTSDIR"
    sudo systemctl daemon-reload
}

function configure_pxefilterd {
    create_pxefilterd_user
    configure_pxefilterd_rootwrap
    configure_pxefilterd_dnsmasq

    local conf=$PXEFILTERD_CONF_FILE
    sudo install -o root -g "$(id -gn "$PXEFILTERD_USER")" -m 0640 \
        "$PXEFILTERD_DIR/etc/pxefilterd/pxefilterd.conf.example" "$conf"
    sudo chown "$STACK_USER" "$conf"

    iniset "$conf" DEFAULT debug "$ENABLE_DEBUG_LOG_LEVEL"
    iniset "$conf" DEFAULT rootwrap_config "$PXEFILTERD_CONF_DIR/rootwrap.conf"
    iniset "$conf" DEFAULT root_helper \
        "sudo $(pxefilterd_bin_dir)/pxefilterd-rootwrap \$rootwrap_config"

    iniset "$conf" pxe_filter sync_period "$PXEFILTERD_SYNC_PERIOD"
    iniset "$conf" pxe_filter deny_unknown_macs "$PXEFILTERD_DENY_UNKNOWN_MACS"
    iniset "$conf" pxe_filter auto_discovery "$PXEFILTERD_AUTO_DISCOVERY"

    iniset "$conf" dnsmasq_pxe_filter dhcp_hostsdir "$PXEFILTERD_HOSTSDIR"

    iniset "$conf" ironic auth_type password
    iniset "$conf" ironic auth_url "$KEYSTONE_SERVICE_URI"
    iniset "$conf" ironic username "$PXEFILTERD_KEYSTONE_USER"
    iniset "$conf" ironic password "$SERVICE_PASSWORD"
    iniset "$conf" ironic project_name "$SERVICE_PROJECT_NAME"
    iniset "$conf" ironic user_domain_name "$SERVICE_DOMAIN_NAME"
    iniset "$conf" ironic project_domain_name "$SERVICE_DOMAIN_NAME"
    iniset "$conf" ironic region_name "$REGION_NAME"

    iniset "$conf" metrics enabled "$PXEFILTERD_METRICS"
    iniset "$conf" metrics listen_port "$PXEFILTERD_METRICS_PORT"

    # It holds the keystone password: root-owned, readable by the daemon.
    sudo chown "root:$(id -gn "$PXEFILTERD_USER")" "$conf"
    sudo chmod 0640 "$conf"
    configure_pxefilterd_systemd
}

function create_pxefilterd_accounts {
    # Reads every port and node: the admin role, like other inspection
    # services in DevStack.
    create_service_user "$PXEFILTERD_KEYSTONE_USER" "admin"
}

function start_pxefilterd {
    sudo systemctl start pxefilterd.service
    # READY=1 comes after the first sync; show what the filter says.
    sudo -u "$PXEFILTERD_USER" "$(pxefilterd_bin_dir)/pxefilterd-ctl" \
        --config-file "$PXEFILTERD_CONF_FILE" status || true
}

function stop_pxefilterd {
    # Stops pxefilterd-dnsmasq.service too (BindsTo=/PartOf=).
    sudo systemctl stop pxefilterd.service || true
}

function cleanup_pxefilterd {
    stop_pxefilterd
    local unit
    for unit in $PXEFILTERD_UNITS; do
        sudo rm -f "$SYSTEMD_DIR/$unit"
    done
    sudo systemctl daemon-reload
    sudo rm -f /etc/sudoers.d/pxefilterd
    sudo rm -rf "$PXEFILTERD_CONF_DIR" "$PXEFILTERD_STATE_DIR"
}

if is_service_enabled pxefilterd; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing pxefilterd"
        install_pxefilterd
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring pxefilterd"
        configure_pxefilterd
        if is_service_enabled key; then
            create_pxefilterd_accounts
        fi
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        echo_summary "Starting pxefilterd"
        start_pxefilterd
    fi

    if [[ "$1" == "unstack" ]]; then
        stop_pxefilterd
    fi

    if [[ "$1" == "clean" ]]; then
        cleanup_pxefilterd
    fi
fi

$PXEFILTERD_XTRACE
