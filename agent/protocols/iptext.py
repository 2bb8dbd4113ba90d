"""Whether a text names an IP address: protocols find addresses in headers, URLs and session descriptions.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts; an edit is used natively only after set-up rebuilds (`scripts/accel.py build`).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Final

IS_IP_CACHE_ENTRIES: Final = 4096  # texts whose answer is remembered (least recently used dropped first)
_MAX_IP_TEXT: Final = 45  # the longest IPv6 text form; longer texts are not addresses and are not cached


@lru_cache(maxsize=IS_IP_CACHE_ENTRIES)
def _parses_as_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_ip(text: str) -> bool:
    """An IPv4 or IPv6 address in its text form (no zone index)."""
    return bool(text) and len(text) <= _MAX_IP_TEXT and "%" not in text and _parses_as_ip(text)
