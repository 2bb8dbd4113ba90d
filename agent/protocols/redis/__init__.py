"""Redis (RESP2/RESP3): commands paired with replies, as Packetbeat reports them."""
