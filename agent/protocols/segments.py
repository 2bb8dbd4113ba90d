"""Collecting the segments of a frame whose size is known, for length-prefixed binary protocols.

Appending each segment to the parser's buffer would copy a large frame once
per segment; the segments wait here and are joined once, when the frame is
complete.  Used by the AMQP and Cassandra parsers.
"""

from __future__ import annotations


class PendingFrame:
    """Segments of one frame, held until `need` bytes have arrived."""

    __slots__ = ("_chunks", "_have", "need")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._have = 0
        self.need = 0  # bytes the frame still lacks beyond what the parser buffered; 0: not waiting

    def __bool__(self) -> bool:
        return self.need > 0

    @property
    def held(self) -> int:
        return self._have

    def add(self, data: bytes) -> bytes | None:
        """Hold `data`; the joined segments once `need` bytes are in, else None."""
        self._chunks.append(data)
        self._have += len(data)
        if self._have < self.need:
            return None
        return self.take()

    def take(self) -> bytes:
        """Everything held, joined (the wait ends)."""
        joined = b"".join(self._chunks)
        self.clear()
        return joined

    def clear(self) -> None:
        self._chunks = []
        self._have = 0
        self.need = 0
