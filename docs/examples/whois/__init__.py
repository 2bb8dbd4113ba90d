"""WHOIS (RFC 3912): the worked example of docs/adding-a-protocol.md."""
