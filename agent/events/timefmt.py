"""UTC timestamps as Packetbeat writes them: RFC 3339 with a `Z`, whatever the host's TZ."""

from __future__ import annotations

import time

PRECISIONS = {"millisecond": 3, "microsecond": 6, "nanosecond": 9}

_cache_sec = -1
_cache_prefix = ""


def format_ns(ts_ns: int, digits: int = 3) -> str:
    """`2024-01-02T03:04:05.678Z` for nanoseconds since the epoch (truncated, never rounded up)."""
    global _cache_sec, _cache_prefix
    sec, frac = divmod(ts_ns, 1_000_000_000)
    if sec != _cache_sec:
        _cache_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _cache_sec = sec
    if digits == 3:
        return f"{_cache_prefix}.{frac // 1_000_000:03d}Z"
    if digits == 6:
        return f"{_cache_prefix}.{frac // 1_000:06d}Z"
    # nanosecond precision prints like Go's RFC3339Nano (trailing zeros trimmed), keeping milliseconds
    digits_text = f"{frac:09d}".rstrip("0").ljust(3, "0")
    return f"{_cache_prefix}.{digits_text}Z"
