"""Cassandra (CQL native protocol v1-v4): requests paired FIFO with responses, as Packetbeat reports them."""
