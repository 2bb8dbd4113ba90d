"""Client and server hello fingerprints: JA3, JA3S (Salesforce) and JA4 (FoxIO), GREASE ignored."""

from __future__ import annotations

import hashlib

from agent.protocols.tls.parser import (
    EXT_ALPN,
    EXT_EC_POINT_FORMATS,
    EXT_SERVER_NAME,
    EXT_SIGNATURE_ALGORITHMS,
    EXT_SUPPORTED_GROUPS,
    EXT_SUPPORTED_VERSIONS,
    ClientHello,
    ServerHello,
)
from agent.protocols.tls.tables import is_grease

JA3S_STANDARD = "standard"
JA3S_PACKETBEAT = "packetbeat"
JA3S_VARIANTS = (JA3S_STANDARD, JA3S_PACKETBEAT)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _joined(values: list[int] | tuple[int, ...]) -> str:
    return "-".join(map(str, values))


def _length_prefixed(raw: bytes | None, size: int) -> list[int]:
    """The values of a list extension (1- or 2-byte length prefix and items), GREASE removed."""
    if raw is None or len(raw) < size:
        return []
    limit = min(raw[0] if size == 1 else (raw[0] << 8) | raw[1], len(raw))
    out = []
    pos = size
    while pos <= limit and pos + size <= len(raw):
        value = raw[pos] if size == 1 else (raw[pos] << 8) | raw[pos + 1]
        if not is_grease(value):
            out.append(value)
        pos += size
    return out


def _ja3_text(version: int, ciphers: tuple[int, ...], hello: ClientHello | ServerHello) -> str:
    groups = _length_prefixed(hello.extension(EXT_SUPPORTED_GROUPS), 2)
    formats = _length_prefixed(hello.extension(EXT_EC_POINT_FORMATS), 1)
    extensions = [ext.type for ext in hello.extensions]
    return f"{version},{_joined(ciphers)},{_joined(extensions)},{_joined(groups)},{_joined(formats)}"


def ja3_string(hello: ClientHello) -> str:
    """`version,ciphers,extensions,groups,point formats`, decimal values joined by `-`."""
    return _ja3_text(hello.version, hello.cipher_suites, hello)


def ja3(hello: ClientHello) -> str:
    return _md5(ja3_string(hello))


def ja3s_string(hello: ServerHello, variant: str = "standard") -> str:
    """`tls.server.ja3s` before hashing.

    The standard (Salesforce) JA3S is `version,cipher,extensions`, as tshark, Suricata,
    Zeek and Arkime compute it.  Packetbeat's variant (`variant="packetbeat"`) applies
    the whole JA3 recipe to the ServerHello: `version,,extensions,groups,point formats`.
    """
    if variant == JA3S_PACKETBEAT:
        return _ja3_text(hello.version, (), hello)
    return f"{hello.version},{hello.cipher_suite},{_joined([ext.type for ext in hello.extensions])}"


def ja3s(hello: ServerHello, variant: str = "standard") -> str:
    return _md5(ja3s_string(hello, variant))


_JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
                 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}


def _alnum(byte: int) -> bool:
    return 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def _ja4_alpn(hello: ClientHello) -> str:
    raw = hello.extension(EXT_ALPN)
    if raw is None or len(raw) < 3 or raw[2] == 0:
        return "00"
    first = raw[3:3 + raw[2]]
    if _alnum(first[0]) and _alnum(first[-1]):
        return chr(first[0]) + chr(first[-1])
    text = first.hex()
    return text[0] + text[-1]


def _ja4_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _highest_version(hello: ClientHello) -> int:
    """The highest supported_versions entry (a 1-byte length, then 16-bit versions), else the hello's."""
    versions = hello.extension(EXT_SUPPORTED_VERSIONS)
    offered: list[int] = []
    if versions is not None and len(versions) >= 3:
        count = min(versions[0], len(versions) - 1) // 2
        offered = [(versions[1 + 2 * i] << 8) | versions[2 + 2 * i] for i in range(count)]
    offered = [v for v in offered if not is_grease(v)]
    return max(offered) if offered else hello.version


def ja4(hello: ClientHello, transport: str = "t") -> str:
    """JA4 of a ClientHello: `t13d1516h2_8daaf6152771_e5627efa2ab1`."""
    version = _JA4_VERSIONS.get(_highest_version(hello), "00")
    ext_types = [ext.type for ext in hello.extensions]
    sni = "d" if EXT_SERVER_NAME in ext_types else "i"
    ciphers = hello.cipher_suites
    head = f"{transport}{version}{sni}{min(len(ciphers), 99):02d}{min(len(ext_types), 99):02d}{_ja4_alpn(hello)}"
    cipher_hash = _ja4_hash(",".join(sorted(f"{c:04x}" for c in ciphers))) if ciphers else "000000000000"
    kept = sorted(f"{t:04x}" for t in ext_types if t not in (EXT_SERVER_NAME, EXT_ALPN))
    if kept:
        text = ",".join(kept)
        signatures = hello.extension(EXT_SIGNATURE_ALGORITHMS)
        algorithms = _length_prefixed(signatures, 2)
        if algorithms:
            text += "_" + ",".join(f"{a:04x}" for a in algorithms)
        ext_hash = _ja4_hash(text)
    else:
        ext_hash = "000000000000"
    return f"{head}_{cipher_hash}_{ext_hash}"
