//! Frame builder: Ethernet/VLAN/IPv4/IPv6/TCP frames with options, for tests and the generator.
