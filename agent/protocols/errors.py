"""The typed errors of the parser contract: malformed input is a `ParseError`, never anything else.

`ParseError` itself lives in the transport layer (the dispatcher is the one
place that catches it).  The subclasses say which rule of the shared
readers was broken, so a parser can tell a short field inside a message it
will still publish (`ShortRead`, often turned into a note) from a stream it
must resynchronise (`LineTooLong`, `FrameTooLarge`).
"""

from __future__ import annotations

from agent.transport.session import ParseError

__all__ = ["FrameTooLarge", "LineTooLong", "ParseError", "ShortRead"]


class ShortRead(ParseError):
    """A `Cursor` read past the end of its message (or span): the message is shorter than its fields say."""


class LineTooLong(ParseError):
    """A line (or header block) grew past its limit without its terminator: not the protocol we follow."""


class FrameTooLarge(ParseError):
    """A length-prefixed frame declared more bytes than the receive buffer may hold."""
