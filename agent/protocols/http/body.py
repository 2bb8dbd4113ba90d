"""Undoing content and transfer codings (gzip, deflate) of a stored HTTP body, bounded in size.

De-chunking is done by the parser while framing; what is left here are the
codings listed in Content-Encoding and Transfer-Encoding, undone last-applied
first.  The output never exceeds `max_size` bytes (a compressed body cannot
blow up memory); a body that cannot be decoded keeps what was decoded and
gets Packetbeat's note text.
"""

from __future__ import annotations

import zlib

ERR_NO_DECODER = "decoder not found"
ERR_SIZE_LIMITED = "body truncated due to size limitation"
ERR_UNEXPECTED_EOF = "unexpected EOF"
ERR_GZIP_HEADER = "gzip: invalid header"
ERR_GZIP_CHECKSUM = "gzip: invalid checksum"
ERR_FLATE_CORRUPT = "flate: corrupt input"

_GZIP = frozenset({"gzip", "x-gzip"})
_DEFLATE = frozenset({"deflate", "x-deflate"})


class DecodeError(Exception):
    def __init__(self, reason: str, partial: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


def _inflate(data: bytes, wbits: int, max_size: int, gzip: bool) -> bytes:
    """Decompress one or more concatenated streams (gzip allows several members)."""
    out: list[bytes] = []
    produced = 0
    rest = data
    while True:
        engine = zlib.decompressobj(wbits)
        try:
            chunk = engine.decompress(rest, max_size - produced + 1)
        except zlib.error as exc:
            text = str(exc)
            if gzip and "header" in text:
                reason = ERR_GZIP_HEADER
            elif gzip and ("check" in text or "length" in text):
                reason = ERR_GZIP_CHECKSUM
            else:
                reason = ERR_FLATE_CORRUPT
            raise DecodeError(reason, b"".join(out)) from None
        out.append(chunk)
        produced += len(chunk)
        if produced > max_size:
            joined = b"".join(out)[:max_size]
            raise DecodeError(ERR_SIZE_LIMITED, joined)
        if not engine.eof:
            if engine.unconsumed_tail:
                # max_length stopped it: the output limit is reached.
                raise DecodeError(ERR_SIZE_LIMITED, b"".join(out)[:max_size])
            raise DecodeError(ERR_UNEXPECTED_EOF, b"".join(out))
        rest = engine.unused_data
        if not gzip or not rest:
            return b"".join(out)
        if rest[:2] != b"\x1f\x8b":
            return b"".join(out)  # trailing garbage after the last member is ignored


def _deflate_wbits(data: bytes) -> int:
    """'deflate' is meant to be zlib-wrapped (RFC 9110), but servers also send raw DEFLATE."""
    if len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
        return zlib.MAX_WBITS
    return -zlib.MAX_WBITS


def decode_one(data: bytes, coding: str, max_size: int) -> bytes:
    if coding in _GZIP:
        return _inflate(data, 16 + zlib.MAX_WBITS, max_size, gzip=True)
    if coding in _DEFLATE:
        return _inflate(data, _deflate_wbits(data), max_size, gzip=False)
    if coding == "identity":
        if len(data) > max_size:
            raise DecodeError(ERR_SIZE_LIMITED, data[:max_size])
        return data
    raise DecodeError(ERR_NO_DECODER, b"")


def decode_body(body: bytes, encodings: tuple[str, ...], max_size: int) -> tuple[bytes, str | None]:
    """(decoded body, note) undoing `encodings` from the last to the first.

    On failure the note reads like Packetbeat's ("unable to decode body using
    gzip encoding: unexpected EOF"); the partial output is kept only when the
    failing coding was the last one to undo, as Packetbeat does.
    """
    for index in range(len(encodings) - 1, -1, -1):
        coding = encodings[index]
        try:
            body = decode_one(body, coding, max_size)
        except DecodeError as exc:
            kept = exc.partial if index == 0 else b""
            return kept, f"unable to decode body using {coding} encoding: {exc.reason}"
    return body, None
