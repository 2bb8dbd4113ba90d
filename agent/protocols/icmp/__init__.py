"""ICMPv4/ICMPv6: echo and the other request/reply pairs, plus errors, as Packetbeat reports them."""
