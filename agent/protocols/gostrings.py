"""Go's `strconv.Quote` and its names for non-finite floats, reproduced: Packetbeat prints some values with
them, so their event text follows Go's rules.

Printable text stays as is; `"` and `\\` are escaped, control characters get
Go's short escapes (`\\n`, `\\t`...) or `\\xNN`, other unprintable runes
`\\uNNNN` or `\\UNNNNNNNN`.  A byte that is not UTF-8 (decoded with
`surrogateescape`) becomes `\\xNN`, as Go's `%q` of a byte slice prints it.
"""

from __future__ import annotations

import math

_SHORT_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
                  "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """`strconv.Quote(text)`; a surrogate-escaped byte (0xDC80-0xDCFF) is quoted as that byte."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    out = ['"']
    for ch in text:
        short = _SHORT_ESCAPES.get(ch)
        if short is not None:
            out.append(short)
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
                out.append(f"\\x{code - 0xDC00:02x}")
            elif code < 0x20 or code == 0x7F:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def go_quote_bytes(raw: bytes) -> str:
    """Go's `%q` of a byte slice: printable UTF-8 text as is, other bytes escaped."""
    return go_quote(raw.decode("utf-8", "surrogateescape"))


def go_float_special(value: float) -> str | None:
    """How Go prints a float that is not a finite number ("NaN", "+Inf", "-Inf"); None for a finite one."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return None
