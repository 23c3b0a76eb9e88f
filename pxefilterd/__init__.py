"""pxefilterd: a dnsmasq PXE filter for ironic in-band inspection."""
