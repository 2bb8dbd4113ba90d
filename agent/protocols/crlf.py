"""The CRLF that closes a length-counted data block in a text protocol (a memcache value, a Redis bulk string)."""

from __future__ import annotations

from agent.protocols.buffer import ReceiveBuffer


def take_crlf(rb: ReceiveBuffer, what: str) -> bool:
    """Consume the CRLF at the read position: False while it has not arrived, ParseError if other bytes stand there."""
    buf = rb.data
    pos = rb.pos
    if len(buf) - pos < 2:
        return False
    if buf[pos] != 0x0D or buf[pos + 1] != 0x0A:
        raise rb.error(f"{what} not terminated by CRLF")
    rb.pos = pos + 2
    return True
