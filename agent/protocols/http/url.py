"""Rendering request details the way Packetbeat does: URL, parameters, Host, cookies, Basic auth.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

Packetbeat uses Go's net/url; these helpers reproduce its results (path
unescaping, `Values.Encode` sorting and escaping, `URL.String` escaping) on
bytes, so non-ASCII and invalid UTF-8 behave the same.
"""

from __future__ import annotations

import binascii
from typing import Final

from agent.protocols.http.head import byte_flags
from agent.protocols.iptext import is_ip

HIDDEN_VALUE: Final = b"xxxxx"

_HEX: Final = b"0123456789ABCDEF"
_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
# Go's url.shouldEscape: what stays as is in each part.
_PATH_KEEP: Final = _UNRESERVED | frozenset(b"$&+,/:;=@")
_HOST_KEEP: Final = _UNRESERVED | frozenset(b"!$&'()*+,;=:[]<>\"")
_QUERY_KEEP: Final = _UNRESERVED


def _escape_table(keep: frozenset[int], space_plus: bool) -> list[bytes]:
    table = []
    for byte in range(256):
        if byte in keep:
            table.append(bytes([byte]))
        elif byte == 32 and space_plus:
            table.append(b"+")
        else:
            table.append(b"%" + _HEX[byte >> 4:(byte >> 4) + 1] + _HEX[byte & 15:(byte & 15) + 1])
    return table


_PATH_TABLE: Final = _escape_table(_PATH_KEEP, False)
_HOST_TABLE: Final = _escape_table(_HOST_KEEP, False)
_QUERY_TABLE: Final = _escape_table(_QUERY_KEEP, True)
# The same sets as bytes, for `translate(None, keep)` (deletes them: empty means nothing to escape), and as
# one flag per byte value, for short inputs (indexing them costs less than the translate call).
_PATH_KEEP_BYTES: Final = bytes(sorted(_PATH_KEEP))
_HOST_KEEP_BYTES: Final = bytes(sorted(_HOST_KEEP))
_QUERY_KEEP_BYTES: Final = bytes(sorted(_QUERY_KEEP))
_PATH_FLAGS: Final = byte_flags(_PATH_KEEP_BYTES)
_HOST_FLAGS: Final = byte_flags(_HOST_KEEP_BYTES)
_QUERY_FLAGS: Final = byte_flags(_QUERY_KEEP_BYTES)
_SCANNED: Final = 64  # inputs up to this long are checked byte by byte


def _escape(data: bytes, table: list[bytes], keep: bytes, flags: bytes) -> bytes:
    if len(data) <= _SCANNED:
        for index in range(len(data)):
            if not flags[data[index]]:
                return b"".join([table[b] for b in data])
        return data  # nothing to escape: the common case
    if not data.translate(None, keep):
        return data
    return b"".join([table[b] for b in data])


def query_escape(data: bytes) -> bytes:
    """Go's url.QueryEscape."""
    return _escape(data, _QUERY_TABLE, _QUERY_KEEP_BYTES, _QUERY_FLAGS)


def _hexval(byte: int) -> int:
    if 48 <= byte <= 57:
        return byte - 48
    if 97 <= byte <= 102:
        return byte - 87
    if 65 <= byte <= 70:
        return byte - 55
    return -1


def unescape(data: bytes, plus_is_space: bool) -> bytes | None:
    """%XX decoding (and '+' as space in query components); None on a malformed escape, as Go."""
    # An int needle, not b"%": CPython tries a bytes needle of `in` as an int first, formatting a TypeError it
    # then drops (1.6k instructions; this runs for every query key and value), and find is a slow call.
    if 37 not in data:
        return data.replace(b"+", b" ") if plus_is_space and 43 in data else data
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        byte = data[i]
        if byte == 37:  # %
            if i + 2 >= n:
                return None
            hi, lo = _hexval(data[i + 1]), _hexval(data[i + 2])
            if hi < 0 or lo < 0:
                return None
            out.append(hi << 4 | lo)
            i += 3
            continue
        out.append(32 if byte == 43 and plus_is_space else byte)
        i += 1
    return bytes(out)


def parse_query(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Go's url.ParseQuery, keeping the pairs it accepts (bad escapes and ';' pairs are skipped)."""
    pairs: list[tuple[bytes, bytes]] = []
    for part in raw.split(b"&"):
        if not part or 59 in part:  # ';'
            continue
        equals = _equals_at(part)
        key, value = (part, b"") if equals < 0 else (part[:equals], part[equals + 1:])
        key_text = unescape(key, True)
        value_text = unescape(value, True)
        if key_text is None or value_text is None:
            continue
        pairs.append((key_text, value_text))
    return pairs


def _equals_at(part: bytes) -> int:
    """The index of the first '=' in a query part, -1 without one (a short part is scanned byte by byte)."""
    if len(part) > _SCANNED:
        return part.find(b"=")
    for index in range(len(part)):
        if part[index] == 61:
            return index
    return -1


def encode_params(params: dict[bytes, list[bytes]]) -> bytes:
    """Go's url.Values.Encode: keys sorted, values in order, query-escaped."""
    out = []
    for key in sorted(params):
        escaped = query_escape(key)
        for value in params[key]:
            out.append(escaped + b"=" + query_escape(value))
    return b"&".join(out)


def collect_params(pairs: list[tuple[bytes, bytes]], hidden: frozenset[bytes]) -> dict[bytes, list[bytes]]:
    params: dict[bytes, list[bytes]] = {}
    for key, value in pairs:
        if hidden and key.lower() in hidden:
            value = HIDDEN_VALUE
        params.setdefault(key, []).append(value)
    return params


def normalize_query(raw: bytes, hidden: frozenset[bytes]) -> bytes:
    """A query string as Packetbeat re-encodes it (sorted, escaped, hidden values replaced)."""
    return encode_params(collect_params(parse_query(raw), hidden))


def censor_query(raw: bytes, hidden: frozenset[bytes]) -> bytes:
    """The same query text with the values of hidden keys replaced, everything else untouched."""
    if not hidden or not raw:
        return raw
    parts = raw.split(b"&")
    changed = False
    for index, part in enumerate(parts):
        key, _sep, _ = part.partition(b"=")
        name = unescape(key, True)
        if name is not None and name.lower() in hidden:
            parts[index] = key + b"=" + HIDDEN_VALUE
            changed = True
    return b"&".join(parts) if changed else raw


class RequestTarget:
    """What Packetbeat reads from a request-target: the unescaped path and the raw query."""

    __slots__ = ("path", "query", "query_start")

    def __init__(self, path: bytes, query: bytes, query_start: int) -> None:
        self.path = path
        self.query = query
        self.query_start = query_start  # offset of the query in the target, -1 without one


def _scheme_length(uri: bytes) -> int:
    """Length of a leading 'scheme:' (Go's getScheme), 0 when there is none."""
    for index, byte in enumerate(uri):
        if 97 <= byte <= 122 or 65 <= byte <= 90:
            continue
        if 48 <= byte <= 57 or byte in (43, 45, 46):
            if index == 0:
                return 0
            continue
        if byte == 58:
            return index + 1 if index > 0 else 0
        return 0
    return 0


def split_target(uri: bytes) -> RequestTarget:
    """Path and query of a request-target, as Go's url.Parse sees them.

    Origin form (/a?b), absolute form (http://host/a?b), asterisk form (*).
    A malformed escape in the path keeps the path as sent (Packetbeat would
    drop path and query together).
    """
    hash_at = uri.find(b"#")
    if hash_at >= 0:
        uri = uri[:hash_at]
    if uri == b"*":
        return RequestTarget(b"*", b"", -1)
    query_at = uri.find(b"?")
    if query_at >= 0:
        rest, query = uri[:query_at], uri[query_at + 1:]
    else:
        rest, query = uri, b""
    scheme = _scheme_length(rest)
    if scheme:
        rest = rest[scheme:]
        if not rest.startswith(b"/"):
            return RequestTarget(b"", query, query_at)  # opaque (mailto:x, host:port of CONNECT)
    if rest.startswith(b"//") and (scheme or not rest.startswith(b"///")):
        slash = rest.find(b"/", 2)
        rest = rest[slash:] if slash >= 0 else b""
    path = unescape(rest, False)
    return RequestTarget(rest if path is None else path, query, query_at)


def escape_path(path: bytes) -> bytes:
    if path == b"*":
        return path
    return _escape(path, _PATH_TABLE, _PATH_KEEP_BYTES, _PATH_FLAGS)


def full_url(host: str, port: int, path: bytes, query: bytes) -> str:
    """Go's url.URL{Scheme: "http", Host, Path, RawQuery}.String() as Packetbeat builds it."""
    if port != 80:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    elif ":" in host:
        authority = f"[{host}]"
    else:
        authority = host
    host_bytes = _escape(authority.encode("utf-8", "surrogateescape"), _HOST_TABLE, _HOST_KEEP_BYTES, _HOST_FLAGS)
    escaped = escape_path(path)
    out = b"http://" + host_bytes
    if escaped and escaped[:1] != b"/":
        out += b"/"
    out += escaped
    if query:
        out += b"?" + query
    return out.decode("utf-8", "replace")


def _atoi(text: str) -> int | None:
    """Go's strconv.Atoi: optional sign, ASCII digits only."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body or not body.isascii() or not body.isdigit():
        return None
    return int(text)




def split_host(header: str) -> tuple[str, int]:
    """(host, port) from a Host header: port 0 when absent or invalid; IPv6 brackets removed."""
    if not header or is_ip(header):
        return header, 0
    port = 0
    colon = header.rfind(":")
    if colon >= 0:
        number = _atoi(header[colon + 1:])
        if number is not None and 0 < number < 65536:
            header, port = header[:colon], number
    if len(header) >= 2 and header[0] == "[" and header[-1] == "]" and is_ip(header[1:-1]):
        header = header[1:-1]
    return header, port


def split_cookies(value: str) -> dict[str, str]:
    """Cookie / Set-Cookie as a map: lower-cased names, quotes stripped, parts without '=' ignored."""
    cookies: dict[str, str] = {}
    for part in value.split(";"):
        name, sep, raw = part.partition("=")
        if not sep:
            continue
        raw = raw.strip()
        if len(raw) > 1 and raw[0] == '"' and raw[-1] == '"':
            raw = raw[1:-1]
        cookies[name.strip().lower()] = raw
    return cookies


def basic_auth_user(value: bytes) -> str:
    """The user name of a Basic Authorization value ('' when absent or malformed)."""
    if len(value) < 6 or value[:6].lower() != b"basic ":
        return ""
    token = value[6:].replace(b"\r", b"").replace(b"\n", b"")
    try:
        decoded = binascii.a2b_base64(token, strict_mode=True)
    except (binascii.Error, ValueError):
        try:
            decoded = binascii.a2b_base64(token + b"=" * (-len(token) % 4), strict_mode=True)
        except (binascii.Error, ValueError):
            return ""
    user, sep, _ = decoded.partition(b":")
    if not sep:
        return ""
    return user.decode("utf-8", "replace")


def path_extension(path: str) -> str:
    """The extension of the last path segment ('zip' for /files.zip), '' without one."""
    segment = path[path.rfind("/") + 1:]
    dot = segment.rfind(".")
    return segment[dot + 1:] if dot >= 0 else ""
