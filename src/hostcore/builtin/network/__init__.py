"""The built-in ``network`` plugin: interfaces, addresses, routes, DNS, DHCP, VLANs, LLDP."""
