"""DNS over UDP and TCP: queries paired with responses by client and DNS id, as Packetbeat reports them."""
