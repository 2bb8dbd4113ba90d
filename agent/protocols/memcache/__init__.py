"""Memcache (text and binary, TCP and UDP), as Packetbeat reports it."""
