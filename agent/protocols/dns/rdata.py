"""RDATA of each record type, decoded and rendered the way Packetbeat renders it.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

Packetbeat gives a handful of types their own fields (A, AAAA, CNAME, NS, PTR,
MX, SOA, SRV, TXT, DNSKEY, DS, RRSIG, NSEC, NSEC3, NSEC3PARAM); every other
type, known or not, is rendered as its RDATA in uncompressed wire form, with
printable bytes kept and the others written as \\DDD (e.g. a CAA record reads
"\\000\\005issueletsencrypt.org").  Known types are still checked field by
field, so a malformed record rejects the message as it would in Packetbeat.

Fields follow miekg/dns's tolerance: a record may stop at any field boundary
(the missing fields read as zero or empty), but never in the middle of one,
and must not leave bytes unread.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable
from ipaddress import IPv6Address
from typing import Any, Final

from agent.protocols.dns import names as N
from agent.protocols.dns.domain import NameCursor, opaque_text, text_string, trim_dot, wire_name

Rendered = dict[str, Any]


def ipv6_text(raw: bytes) -> str:
    """An IPv6 address as Go prints it: IPv4-mapped ones in dotted form, never "::a.b.c.d" otherwise."""
    if raw[:12] == b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    text = socket.inet_ntop(socket.AF_INET6, raw)
    if "." in text:  # glibc writes ::a.b.c.d for IPv4-compatible addresses; Go does not
        return str(IPv6Address(raw))
    return text


def _time_text(seconds: int) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(seconds))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def type_bitmap(c: NameCursor) -> list[int]:
    """An NSEC/NSEC3/CSYNC type bitmap: windows in increasing order, each 1-32 bytes."""
    types: list[int] = []
    last = -1
    while not c.at_end():
        window = c.u8()
        length = c.u8()
        if window <= last:
            raise c.error("type bitmap windows out of order")
        if length == 0 or length > 32:
            raise c.error(f"type bitmap window of {length} bytes")
        bits = c.take(length)
        base = window * 256
        for i, byte in enumerate(bits):
            if byte:
                for bit in range(8):
                    if byte & (0x80 >> bit):
                        types.append(base + i * 8 + bit)
        last = window
    return types


def _bitmap_text(types: list[int]) -> str:
    return " ".join([N.type_name(t) for t in types])


# -- the types Packetbeat renders field by field ---------------------------------------

def _a(c: NameCursor) -> Rendered | None:
    if c.at_end():
        return None  # no address: Packetbeat leaves the record out of the list
    return {"data": socket.inet_ntop(socket.AF_INET, c.take(4))}


def _aaaa(c: NameCursor) -> Rendered | None:
    if c.at_end():
        return None
    return {"data": ipv6_text(c.take(16))}


def _target(c: NameCursor) -> Rendered:
    return {"data": "" if c.at_end() else trim_dot(c.name())}


def _mx(c: NameCursor) -> Rendered:
    pref = 0 if c.at_end() else c.u16()
    return {"preference": pref, "data": "" if c.at_end() else trim_dot(c.name())}


def _soa(c: NameCursor) -> Rendered:
    ns = "" if c.at_end() else trim_dot(c.name())
    mbox = "" if c.at_end() else trim_dot(c.name())
    values = [0 if c.at_end() else c.u32() for _ in range(5)]
    return {"rname": mbox, "serial": values[0], "refresh": values[1], "retry": values[2], "expire": values[3],
            "minimum": values[4], "data": ns}


def _srv(c: NameCursor) -> Rendered:
    prio, weight, port = (0 if c.at_end() else c.u16() for _ in range(3))
    return {"priority": prio, "weight": weight, "port": port, "data": "" if c.at_end() else trim_dot(c.name())}


def _txt(c: NameCursor) -> Rendered:
    parts = []
    while not c.at_end():
        parts.append(text_string(c.counted()))
    return {"data": " ".join(parts)}


def _dnskey(c: NameCursor) -> Rendered:
    flags = 0 if c.at_end() else c.u16()
    proto = 0 if c.at_end() else c.u8()
    alg = 0 if c.at_end() else c.u8()
    return {"flags": str(flags), "protocol": str(proto), "algorithm": N.algorithm_name(alg), "data": _b64(c.rest())}


def _ds(c: NameCursor) -> Rendered:
    tag = 0 if c.at_end() else c.u16()
    alg = 0 if c.at_end() else c.u8()
    digest = 0 if c.at_end() else c.u8()
    return {"key_tag": str(tag), "algorithm": N.algorithm_name(alg), "digest_type": N.hash_name(digest),
            "data": c.rest().hex().upper()}


def _rrsig(c: NameCursor) -> Rendered:
    covered = 0 if c.at_end() else c.u16()
    alg = 0 if c.at_end() else c.u8()
    labels = 0 if c.at_end() else c.u8()
    orig_ttl = 0 if c.at_end() else c.u32()
    expiration = 0 if c.at_end() else c.u32()
    inception = 0 if c.at_end() else c.u32()
    tag = 0 if c.at_end() else c.u16()
    signer = "" if c.at_end() else trim_dot(c.name())
    return {"type_covered": N.type_name(covered), "algorithm": N.algorithm_name(alg), "labels": str(labels),
            "original_ttl": str(orig_ttl), "expiration": _time_text(expiration),
            "inception": _time_text(inception), "key_tag": str(tag), "signer_name": signer,
            "data": _b64(c.rest())}


def _nsec(c: NameCursor) -> Rendered:
    nxt = "" if c.at_end() else c.name()  # Packetbeat keeps this name's trailing dot
    return {"type_bits": _bitmap_text(type_bitmap(c)), "data": nxt}


def _salt(c: NameCursor) -> str:
    if c.at_end():
        return "-"
    salt = c.counted()
    return salt.hex().upper() if salt else "-"


def _nsec3(c: NameCursor) -> Rendered:
    hash_alg = 0 if c.at_end() else c.u8()
    flags = 0 if c.at_end() else c.u8()
    iterations = 0 if c.at_end() else c.u16()
    salt = _salt(c)
    nxt = "" if c.at_end() else base64.b32hexencode(c.counted()).decode("ascii")
    return {"hash": N.hash_name(hash_alg), "flags": str(flags), "iterations": str(iterations), "salt": salt,
            "type_bits": _bitmap_text(type_bitmap(c)), "data": nxt}


def _nsec3param(c: NameCursor) -> Rendered:
    hash_alg = 0 if c.at_end() else c.u8()
    flags = 0 if c.at_end() else c.u8()
    iterations = 0 if c.at_end() else c.u16()
    return {"hash": N.hash_name(hash_alg), "flags": str(flags), "iterations": str(iterations), "data": _salt(c)}


_T_AAAA: Final = N.T_AAAA
_T_CNAME: Final = N.T_CNAME
_T_MX: Final = N.T_MX
_T_TXT: Final = N.T_TXT
_RENDERERS: dict[int, Callable[[NameCursor], Rendered | None]] = {
    N.T_A: _a, N.T_AAAA: _aaaa, N.T_CNAME: _target, N.T_NS: _target, N.T_PTR: _target, N.T_MX: _mx,
    N.T_SOA: _soa, N.T_SRV: _srv, N.T_TXT: _txt, N.T_DNSKEY: _dnskey, N.T_DS: _ds, N.T_RRSIG: _rrsig,
    N.T_NSEC: _nsec, N.T_NSEC3: _nsec3, N.T_NSEC3PARAM: _nsec3param,
}


# -- every other known type: checked by layout, rendered as opaque RDATA ---------------
#
# Layout letters: B/H/I/6/Q fixed 1/2/4/6/8 bytes, a/A a 4/16-byte address, n a name
# (re-written uncompressed, as Packetbeat re-encodes it), s a character-string,
# S character-strings to the end, r the rest, b a type bitmap, P SVCB parameters.

_LAYOUTS: dict[int, str] = {
    3: "n", 4: "n", 7: "n", 8: "n", 9: "n", 39: "n", 23: "n",  # MD MF MB MG MR DNAME NSAP-PTR
    14: "nn", 17: "nn", 58: "nn",  # MINFO RP TALINK
    18: "Hn", 21: "Hn", 36: "Hn", 107: "Hn",  # AFSDB RT KX LP
    26: "Hnn",  # PX
    35: "HHsssn",  # NAPTR
    13: "ss", 20: "ss", 19: "s", 100: "s", 27: "sss",  # HINFO ISDN X25 UINFO GPOS
    99: "S", 258: "S", 56: "S", 261: "S",  # SPF AVC NINFO RESINFO
    25: "HBBr", 60: "HBBr", 57: "HBBr",  # KEY CDNSKEY RKEY
    59: "HBBr", 32769: "HBBr", 32768: "HBBr",  # CDS DLV TA
    24: "HBBIIIHnr",  # SIG
    44: "BBr", 52: "BBBr", 53: "BBBr", 257: "Bsr", 61: "r", 37: "HHBr", 49: "r", 256: "HHr", 63: "IBBr",
    29: "BBBBIII", 108: "6", 109: "Q", 105: "Ha", 106: "HQ", 104: "HQ", 101: "I", 102: "I",
    62: "IHb", 30: "nb", 128: "", 31: "r", 32: "r", 10: "r", 255: "",
    64: "HnP", 65: "HnP",  # SVCB HTTPS
    250: "nr", 249: "nr",  # TSIG TKEY: the algorithm name, then opaque fields
}


def _svcb_params(c: NameCursor) -> None:
    last = -1
    while not c.at_end():
        key = c.u16()
        value = c.span(c.u16())
        if key <= last:
            raise c.error("SVCB keys not in strictly increasing order")
        if key == 65535:
            raise c.error("reserved SVCB key 65535")
        size = value.remaining()
        if (key == 2 and size) or (key == 3 and size != 2) or (key in (0,) and size % 2) \
                or (key == 4 and (size == 0 or size % 4)) or (key == 6 and (size == 0 or size % 16)):
            raise c.error(f"bad length {size} for SVCB key {key}")
        if key == 1:
            while not value.at_end():
                value.counted()
        last = key


def _by_layout(c: NameCursor, layout: str) -> bytes:
    out: list[bytes] = []
    for letter in layout:
        if c.at_end():
            break
        start = c.pos
        if letter == "n":
            out.append(wire_name(c.labels()))
            continue
        if letter == "B":
            c.u8()
        elif letter == "H":
            c.u16()
        elif letter == "I":
            c.u32()
        elif letter == "6":
            c.u48()
        elif letter in "Qa":
            c.take(8 if letter == "Q" else 4)
        elif letter == "A":
            c.take(16)
        elif letter == "s":
            c.counted()
        elif letter == "S":
            while not c.at_end():
                c.counted()
        elif letter == "b":
            type_bitmap(c)
        elif letter == "P":
            _svcb_params(c)
        else:  # "r"
            c.rest()
        out.append(c.data[start:c.pos])
    return b"".join(out)


def _hip(c: NameCursor) -> bytes:
    start = c.pos
    hit_len = c.u8()
    if c.at_end():
        return c.data[start:c.pos]
    c.u8()
    if c.at_end():
        return c.data[start:c.pos]
    key_len = c.u16()
    c.take(hit_len)
    c.take(key_len)
    head = c.data[start:c.pos]
    servers = []
    while not c.at_end():
        servers.append(wire_name(c.labels()))
    return head + b"".join(servers)


def _gateway(c: NameCursor, kind: int) -> bytes:
    if kind == 1:
        return c.take(4)
    if kind == 2:
        return c.take(16)
    if kind == 3:
        return wire_name(c.labels())
    return b""


def _ipseckey(c: NameCursor) -> bytes:
    start = c.pos
    c.u8()
    kind = c.u8()
    c.u8()
    head = c.data[start:c.pos]
    return head + _gateway(c, kind) + c.rest()


def _amtrelay(c: NameCursor) -> bytes:
    start = c.pos
    c.u8()
    kind = c.u8() & 0x7F
    head = c.data[start:c.pos]
    return head + _gateway(c, kind)


def _apl(c: NameCursor) -> bytes:
    start = c.pos
    while not c.at_end():
        family = c.u16()
        c.u8()
        size = c.u8() & 0x7F
        if family not in (1, 2) or size > (4 if family == 1 else 16):
            raise c.error(f"bad APL item (family {family}, {size} bytes)")
        c.take(size)
    return c.data[start:c.pos]


_SPECIAL: dict[int, Callable[[NameCursor], bytes]] = {55: _hip, 45: _ipseckey, 260: _amtrelay, 42: _apl}


def render(c: NameCursor, rtype: int) -> Rendered | None:
    """The fields of one record's RDATA (`c` spans exactly the RDATA); None leaves the record out."""
    fields: Rendered | None
    # The commonest types by direct calls (native under mypyc; a call through the table is a Python call).
    if rtype == _T_AAAA:
        fields = _aaaa(c)
    elif rtype == _T_CNAME:
        fields = _target(c)
    elif rtype == _T_MX:
        fields = _mx(c)
    elif rtype == _T_TXT:
        fields = _txt(c)
    else:
        renderer = _RENDERERS.get(rtype)
        if renderer is None:
            return _opaque(c, rtype)
        fields = renderer(c)
    c.finish()
    return fields


def _opaque(c: NameCursor, rtype: int) -> Rendered:
    """A type Packetbeat does not render field by field: its RDATA as text, checked by layout when known."""
    if c.at_end():
        return {"data": ""}
    layout = _LAYOUTS.get(rtype)
    if layout is not None:
        rdata = _by_layout(c, layout)
    else:
        special = _SPECIAL.get(rtype)
        rdata = special(c) if special is not None else c.rest()
    c.finish()
    return {"data": opaque_text(rdata)}
