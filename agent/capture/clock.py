"""Kernel boot-time timestamps to wall clock.

The program stamps records with bpf_ktime_get_boot_ns() (monotonic,
counts suspend); events need wall-clock time.  The offset is measured at
start and refreshed periodically, so NTP steps reach the timestamps within
one refresh.
"""

from __future__ import annotations

import time


def boot_offset_ns() -> int:
    """wall clock - CLOCK_BOOTTIME, in ns (read back to back, the smaller error of two reads)."""
    best = None
    for _ in range(2):
        before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        wall = time.time_ns()
        after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        span = after - before
        if best is None or span < best[0]:
            best = (span, wall - (before + after) // 2)
    assert best is not None
    return best[1]
