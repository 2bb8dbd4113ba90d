"""SIP URIs and name-addr values (From, To, Contact) split the way Packetbeat splits them.

`parse_uri` walks the URI once: the scheme is what precedes the first ':';
then '@' closes the user part (a ':' before it was a password, not a
port), a ':' outside brackets closes the host, and the first unescaped ';'
ends the URI and starts its parameters.  The host keeps IPv6 brackets.  It
is deliberately forgiving: it never fails, it returns what it found
(Packetbeat applies it even to header values that still carry '<...>').
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

_DISPLAY_TRIM = "'\"\t "
_PORT_MAX = 65535
URI_CACHE_SIZE = 4096  # dialogs repeat the same URIs; the cache is bounded
_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Uri:
    original: str
    scheme: str = ""
    username: str = ""
    host: str = ""
    port: int = 0
    params: Mapping[str, str] = field(default_factory=lambda: _NO_PARAMS)  # read-only: results are cached


@dataclass(frozen=True, slots=True)
class NameAddr:
    display: str
    uri: str
    params: Mapping[str, str]  # read-only: results are cached


def _port(text: str) -> int:
    text = text.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit():
        return 0
    value = int(text)
    return value if 0 <= value <= _PORT_MAX else 0


def _params(text: str, exact_pairs: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for param in text.split(";"):
        if exact_pairs:
            parts = param.split("=")
            if len(parts) != 2:
                continue
        else:
            parts = param.split("=", 1)
            if len(parts) != 2:
                continue
        out[parts[0].strip().lower()] = parts[1]
    return out


@lru_cache(maxsize=URI_CACHE_SIZE)
def parse_uri(text: str) -> Uri:
    uri = text.strip()
    colon = uri.find(":")
    if colon < 0:
        return Uri(uri)
    if "[" in uri or "\\" in uri:
        return _parse_uri_slowly(uri, colon)
    scheme = uri[:colon]
    rest = uri[colon + 1:]
    end = rest.find(";")
    part = rest if end < 0 else rest[:end]
    username = ""
    at = part.rfind("@")
    if at >= 0:
        # The user part is the segment before the last '@'; when a non-empty segment ended by
        # ':' precedes it, that ':' was a password separator and the segment belongs to the user.
        j = max(part.rfind(":", 0, at), part.rfind("@", 0, at))
        if j >= 0 and part[j] == ":":
            k = max(part.rfind(":", 0, j), part.rfind("@", 0, j))
            username = part[k + 1:at] if j > k + 1 else part[j + 1:at]
        else:
            username = part[j + 1:at]
        part = part[at + 1:]
    port = 0
    last = part.rfind(":")
    # With several ':' the host is what lies between the last two (as with '@').
    host = part[part.rfind(":", 0, last) + 1:last] if last >= 0 else ""
    if host:
        port = _port(part[last + 1:])
    else:
        host = part[last + 1:].strip()
    params = _params(rest[end + 1:], exact_pairs=True) if end >= 0 else {}
    return Uri(uri, scheme, username, host, port, MappingProxyType(params))


def _parse_uri_slowly(uri: str, colon: int) -> Uri:
    """The same walk, one character at a time, for URIs with IPv6 brackets or escapes."""
    scheme = uri[:colon]
    start = colon + 1  # where the part being read began
    before = -1  # where the previous part began (a ':' may turn out to be a password)
    end = len(uri)
    username = ""
    host = ""
    in_brackets = False
    has_params = False
    prev = uri[0]
    for idx in range(colon + 1, len(uri)):
        ch = uri[idx]
        escaped = prev == "\\"
        if ch == "[" and not escaped:
            in_brackets = True
        elif ch == "]" and not escaped:
            in_brackets = False
        elif ch == ";" and not escaped:
            has_params = True
            end = idx
            break
        elif ch == "@":
            if host:
                start = before
                host = ""
            username = uri[start:idx]
            before = start
            start = idx + 1
        elif ch == ":" and not in_brackets:
            host = uri[start:idx]
            before = start
            start = idx + 1
        prev = ch
    port = 0
    if start <= end:
        if host:
            port = _port(uri[start:end])
        else:
            host = uri[start:end].strip()
    params = _params(uri[end + 1:], exact_pairs=True) if has_params else {}
    return Uri(uri, scheme, username, host, port, MappingProxyType(params))


@lru_cache(maxsize=URI_CACHE_SIZE)
def parse_name_addr(text: str) -> NameAddr:
    """`display <uri>;params` or `uri;params` (RFC 3261 §20.10)."""
    value = text.strip()
    opening = value.find("<")
    wrapped = opening >= 0
    start = opening if wrapped else 0
    display = value[:start].strip(_DISPLAY_TRIM)
    closing = value.find(">", start) if wrapped else value.find(";")
    if closing < 0:
        return NameAddr(display, value[start + 1:] if wrapped else value, _NO_PARAMS)
    uri = value[start + 1:closing] if wrapped else value[:closing]
    return NameAddr(display, uri, MappingProxyType(_params(value[closing + 1:], exact_pairs=False)))
