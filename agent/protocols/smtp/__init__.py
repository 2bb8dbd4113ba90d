"""SMTP (RFC 5321, ESMTP extensions): commands, replies and the messages they carry."""
