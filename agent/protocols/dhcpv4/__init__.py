"""DHCPv4 (BOOTP with the DHCP magic cookie): one event per message, as Packetbeat reports them."""
