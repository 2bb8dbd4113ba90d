"""How Packetbeat prints Thrift values: Go's quoting and float formatting, reproduced.

Packetbeat renders every value as text with Go's standard library, so the
event strings follow Go's rules: `strconv.Quote` for strings (escapes such as
`\\x10`, `\\u00a0`), `strconv.FormatFloat(f, 'f', -1, 64)` for doubles (the
shortest digits that read back, never an exponent), and lowercase hex for
bytes that are not valid UTF-8.
"""

from __future__ import annotations

import math
from decimal import Decimal

from agent.protocols.gostrings import go_float_special, go_quote


def go_float(value: float) -> str:
    """`strconv.FormatFloat(value, 'f', -1, 64)`: shortest round-trip digits, no exponent."""
    special = go_float_special(value)
    if special is not None:
        return special
    if value.is_integer() and abs(value) < 1e16:
        text = str(int(value))
        return "-0" if text == "0" and math.copysign(1.0, value) < 0 else text
    return format(Decimal(repr(value)).normalize(), "f")


def render_string(raw: bytes, truncated: bool, obfuscate: bool) -> str:
    """A Thrift string/binary value as Packetbeat prints it.

    `raw` is at most `string_max_size` bytes; `truncated` says the value was
    longer, in which case Packetbeat appends "..." before quoting.
    """
    if truncated:
        raw += b"..."
    if not raw:
        return '""'
    if obfuscate:
        return '"*"'
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex()
    return go_quote(text)
