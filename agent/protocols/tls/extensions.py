"""Hello extensions rendered the way Packetbeat shows them under `tls.detailed.*_hello.extensions`.

Each known extension has a label and a decoder.  A decoder returns the value
to show, `None` for a well-formed but empty list (a null field), or
`UNPARSED` when the body does not decode; undecodable and unknown extensions
are listed by label (or by number) in `_unparsed_`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.protocols.tls.parser import Extension
from agent.protocols.tls.tables import (
    CERTIFICATE_TYPES,
    ec_point_format_name,
    group_name,
    is_grease,
    signature_scheme_name,
    version_text,
)

UNPARSED: Any = object()


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _u16(data: bytes, pos: int) -> int | None:
    return (data[pos] << 8) | data[pos + 1] if pos + 2 <= len(data) else None


def server_names(data: bytes) -> Any:
    """server_name: the host_name entries (type 0) of the list."""
    list_len = _u16(data, 0)
    if list_len is None:
        return UNPARSED
    hosts = []
    pos, limit = 2, 2 + list_len
    while pos + 3 <= limit:
        name_len = _u16(data, pos + 1)
        end = pos + 3 + (name_len or 0)
        if name_len is None or end > limit or end > len(data):
            break
        if data[pos] == 0:
            hosts.append(_text(data[pos + 3:end]))
        pos = end
    return hosts or None


def _max_fragment_length(data: bytes) -> Any:
    if len(data) != 1:
        return UNPARSED
    value = data[0]
    return f"2^{8 + value}" if 0 < value < 5 else f"(unknown:{value})"


def _expect_empty(data: bytes) -> Any:
    return "" if not data else f"(expected empty: found {len(data)} bytes)"


def _ignore(_data: bytes) -> Any:
    return UNPARSED


def _status_request(data: bytes) -> Any:
    if not data:
        return {"response": True}  # the server's empty acknowledgement
    responders = _u16(data, 1)
    if responders is None:
        return UNPARSED
    extensions = _u16(data, 3 + responders)
    return {"type": "ocsp" if data[0] == 1 else str(data[0]), "responder_id_list_length": responders,
            "request_extensions": extensions or 0}


def _cert_type(data: bytes) -> Any:
    pos, limit = 0, len(data)
    if limit > 1:  # a client's list is length-prefixed, a server's single answer is not
        pos = 1
        limit = min(limit, 1 + data[0])
    types = [CERTIFICATE_TYPES.get(v) or f"(unknown:{v})" for v in data[pos:limit]]
    return types or None


def supported_groups(data: bytes) -> Any:
    length = _u16(data, 0)
    if length is None or length + 2 != len(data):
        return UNPARSED
    groups = [group_name(g) for g in _u16_list(data, 2) if not is_grease(g)]
    return groups or None


def _ec_point_formats(data: bytes) -> Any:
    if not data or data[0] + 1 != len(data):
        return UNPARSED
    return [ec_point_format_name(v) for v in data[1:]] or None


def _srp(data: bytes) -> Any:
    if not data or data[0] + 1 > len(data):
        return UNPARSED
    return _text(data[1:1 + data[0]])


def signature_algorithms(data: bytes) -> Any:
    length = _u16(data, 0)
    if length is None or length + 2 != len(data):
        return UNPARSED
    return [signature_scheme_name(v) for v in _u16_list(data, 2)] or None


def _session_ticket(data: bytes) -> Any:
    return f"({len(data)} bytes)" if data else ""


def alpn_protocols(data: bytes) -> Any:
    length = _u16(data, 0)
    if length is None or length + 2 != len(data):
        return UNPARSED
    protocols = []
    pos = 2
    while pos < len(data):
        end = pos + 1 + data[pos]
        if end > len(data):
            return UNPARSED
        protocols.append(_text(data[pos + 1:end]))
        pos = end
    return protocols or None


def _supported_versions(data: bytes) -> Any:
    if len(data) == 2:  # a ServerHello's selected version
        return version_text((data[0] << 8) | data[1])
    if len(data) < 3:
        return UNPARSED
    list_bytes = data[0]
    if 1 + list_bytes > len(data) or list_bytes & 1 or not list_bytes:
        return UNPARSED
    versions = [version_text(v) for v in _u16_list(data[1:1 + list_bytes], 0) if not is_grease(v)]
    return versions or None


def _u16_list(data: bytes, start: int) -> list[int]:
    return [(data[i] << 8) | data[i + 1] for i in range(start, len(data) - 1, 2)]


_DECODERS: dict[int, tuple[str, Callable[[bytes], Any]]] = {
    0: ("server_name_indication", server_names),
    1: ("max_fragment_length", _max_fragment_length),
    2: ("client_certificate_url", _expect_empty),
    3: ("trusted_ca_keys", _ignore),
    4: ("truncated_hmac", _expect_empty),
    5: ("status_request", _status_request),
    6: ("user_mapping", _ignore),
    7: ("client_authz", _ignore),
    8: ("server_authz", _ignore),
    9: ("cert_type", _cert_type),
    10: ("supported_groups", supported_groups),
    11: ("ec_points_formats", _ec_point_formats),
    12: ("srp", _srp),
    13: ("signature_algorithms", signature_algorithms),
    16: ("application_layer_protocol_negotiation", alpn_protocols),
    35: ("session_ticket", _session_ticket),
    43: ("supported_versions", _supported_versions),
    0xFF01: ("renegotiation_info", _ignore),
}


def render(extensions: tuple[Extension, ...]) -> dict[str, Any]:
    """Packetbeat's `extensions` map of one hello (empty when it had none)."""
    out: dict[str, Any] = {}
    unparsed: list[str] = []
    for ext in extensions:
        known = _DECODERS.get(ext.type)
        if known is None:
            unparsed.append(str(ext.type))
            continue
        label, decode = known
        value = decode(ext.data)
        if value is UNPARSED:
            unparsed.append(label)
        else:
            out[label] = value
    if unparsed:
        out["_unparsed_"] = unparsed
    return out


def first_value(extensions: tuple[Extension, ...], ext_type: int) -> str | None:
    """The first SNI host name or ALPN protocol of a hello, as Packetbeat picks them."""
    decode = server_names if ext_type == 0 else alpn_protocols
    value = None
    for ext in extensions:
        if ext.type == ext_type:
            value = decode(ext.data)  # a repeated extension: the last one wins
    if isinstance(value, list) and value:
        return str(value[0])
    return None
