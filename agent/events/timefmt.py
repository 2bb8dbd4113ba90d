"""UTC timestamps as Packetbeat writes them: RFC 3339 with a `Z`, whatever the host's TZ.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.
"""

from __future__ import annotations

import time
from typing import Final

PRECISIONS: Final = {"millisecond": 3, "microsecond": 6, "nanosecond": 9}

_prefixes: dict[int, str] = {}
_PREFIX_CACHE_LIMIT: Final = 4096
# ".000Z" ... ".999Z": every event has two or three millisecond timestamps, and formatting the
# number each time cost more than the rest of the timestamp.
_MILLIS: Final = tuple(f".{ms:03d}Z" for ms in range(1000))


def format_ns(ts_ns: int, digits: int = 3) -> str:
    """`2024-01-02T03:04:05.678Z` for nanoseconds since the epoch (truncated, never rounded up)."""
    sec = ts_ns // 1_000_000_000
    frac = ts_ns % 1_000_000_000  # not ts_ns - sec * 10**9: compiled, that product leaves native ints
    prefix = _prefixes.get(sec)
    if prefix is None:
        if len(_prefixes) >= _PREFIX_CACHE_LIMIT:
            _prefixes.clear()
        prefix = _prefixes[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    if digits == 3:
        return prefix + _MILLIS[frac // 1_000_000]
    if digits == 6:
        return f"{prefix}.{frac // 1_000:06d}Z"
    # nanosecond precision prints like Go's RFC3339Nano (trailing zeros trimmed), keeping milliseconds
    digits_text = f"{frac:09d}".rstrip("0").ljust(3, "0")
    return f"{prefix}.{digits_text}Z"
