"""ironic-pxe-filter's configuration in pxefilterd's terms.

ironic's own PXE filter (``ironic-pxe-filter``, in ironic since 2024)
reads three ``[pxe_filter]`` options and ``[auto_discovery] enabled`` from
an ironic.conf, and ironic's database through ``[database] connection``.
pxefilterd reads the filter options under ironic's names (``sync_period``
and ``supported_inspect_interfaces`` are its own names too; the others,
:data:`ALIASES`, are oslo.config deprecated names of its options), and asks
ironic's API instead of its database.
"""

#: ironic's names that pxefilterd reads as another option:
#: ``(group, name) -> (pxefilterd group, pxefilterd name)``.
ALIASES = {
    ('pxe_filter', 'dhcp_hostsdir'): ('dnsmasq_pxe_filter', 'dhcp_hostsdir'),
    ('auto_discovery', 'enabled'): ('pxe_filter', 'auto_discovery'),
}

#: Options of the sections ironic shares with the filter that belong to
#: ironic alone: ``(group, name) -> what they are``.
IRONIC_ONLY = {
    ('auto_discovery', 'driver'):
        'the driver ironic enrolls discovered nodes with',
    ('auto_discovery', 'inspection_scope'):
        'the inspection scope ironic gives the nodes it enrolls',
}
