"""TLS handshake metadata: versions, ciphers, SNI, ALPN, JA3/JA3S/JA4, certificates, alerts (no decryption)."""
