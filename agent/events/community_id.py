"""Community ID flow hashing, version 1 (https://github.com/corelight/community-id-spec).

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.
"""

from __future__ import annotations

import binascii
import hashlib
import struct
from typing import Final

# ICMP types whose "other side" type stands in for the destination port.
_ICMP4_PAIRS: Final = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_PAIRS: Final = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131, 131: 130,
                139: 140, 140: 139, 144: 145, 145: 144}

_PORTS: Final = struct.Struct("!HH")
_SEED: Final = struct.Struct("!H")
_PROTO_PAD: Final = [bytes((proto, 0)) for proto in range(256)]
_NO_SEED: Final = _SEED.pack(0)


def community_id(src: bytes, dst: bytes, proto: int, sport: int = 0, dport: int = 0, seed: int = 0,
                 icmp_type: int | None = None, icmp_code: int = 0) -> str:
    """`1:<base64 sha1>` for a flow; for ICMP pass the message's type and code instead of ports."""
    one_way = False
    if proto in (1, 58):
        t = icmp_type or 0
        pairs = _ICMP4_PAIRS if proto == 1 else _ICMP6_PAIRS
        if t in pairs:
            sport, dport = t, pairs[t]
        else:
            sport, dport, one_way = t, icmp_code, True
    if not one_way and (src > dst or (src == dst and sport > dport)):  # (src, sport) > (dst, dport)
        src, dst, sport, dport = dst, src, dport, sport
    data = (_NO_SEED if seed == 0 else _SEED.pack(seed)) + src + dst + _PROTO_PAD[proto & 0xFF]
    if proto in (1, 6, 17, 58, 132):
        data += _PORTS.pack(sport, dport)
    return "1:" + binascii.b2a_base64(hashlib.sha1(data).digest(), newline=False).decode()
