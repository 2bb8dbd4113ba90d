"""MongoDB wire protocol, as Packetbeat reports it."""
