"""What one handshake becomes in the event: ECS `tls.*` and Packetbeat's `tls.detailed.*`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.protocols.base import prefixed
from agent.protocols.tls import extensions as ext_render
from agent.protocols.tls.certificates import Certificate
from agent.protocols.tls.fingerprints import ja3, ja3s, ja4
from agent.protocols.tls.parser import (
    EXT_ALPN,
    EXT_KEY_SHARE,
    EXT_PRE_SHARED_KEY,
    EXT_SERVER_NAME,
    EXT_SESSION_TICKET,
    Alert,
    ClientHello,
    ServerHello,
    is_tls13,
)
from agent.protocols.tls.tables import (
    alert_level_name,
    alert_name,
    cipher_name,
    compression_name,
    group_name,
    ocsp_status_name,
    protocol_version,
    version_text,
)

CLIENT = "client"
SERVER = "server"


# -- the field table (ECS tls.*, Packetbeat's tls.detailed.*) -------------------------------------------

# An issuer's or a subject's name.
_DISTINGUISHED_NAME = """
common_name keyword
country keyword
distinguished_name keyword
locality keyword
organization keyword
organizational_unit keyword
province keyword
state_or_province keyword
"""

_X509 = f"""
alternative_names keyword
{prefixed("issuer", _DISTINGUISHED_NAME)}
not_after date
not_before date
public_key_algorithm keyword
public_key_curve keyword
public_key_exponent long noindex
public_key_size long
serial_number keyword
signature_algorithm keyword
{prefixed("subject", _DISTINGUISHED_NAME)}
version keyword
version_number keyword
"""


_TLS_SIDE = """
certificate keyword
certificate_chain keyword
hash.md5 keyword
hash.sha1 keyword
hash.sha256 keyword
issuer keyword
not_after date
not_before date
subject keyword
"""


_TLS = """
tls.cipher keyword
tls.curve keyword
tls.established boolean
tls.next_protocol keyword
tls.resumed boolean
tls.version keyword
tls.version_protocol keyword
tls.client.ja3 keyword
tls.client.ja4 keyword
tls.client.server_name keyword
tls.client.supported_ciphers keyword
tls.server.ja3s keyword
"""


# What both hellos publish (hello_fields renders both); each adds its own fields after it.
_HELLO = """
version keyword
random keyword
session_id keyword
extensions.application_layer_protocol_negotiation keyword
extensions.session_ticket keyword
extensions.supported_versions keyword
extensions.ec_points_formats keyword
extensions._unparsed_ keyword
"""

_TLS_DETAILED = f"""
tls.detailed.version keyword
tls.detailed.resumption_method keyword
tls.detailed.client_certificate_requested boolean
tls.detailed.ocsp_response keyword
tls.detailed.alert_types keyword
{prefixed("tls.detailed.client_hello", _HELLO)}
tls.detailed.client_hello.supported_compression_methods keyword
tls.detailed.client_hello.extensions.server_name_indication keyword
tls.detailed.client_hello.extensions.supported_groups keyword
tls.detailed.client_hello.extensions.signature_algorithms keyword
tls.detailed.client_hello.extensions.status_request.type keyword
tls.detailed.client_hello.extensions.status_request.responder_id_list_length short
tls.detailed.client_hello.extensions.status_request.request_extensions short
{prefixed("tls.detailed.server_hello", _HELLO)}
tls.detailed.server_hello.selected_compression_method keyword
tls.detailed.server_hello.extensions.status_request.response boolean
tls.detailed.server_certificate_chain object
tls.detailed.client_certificate_chain object
"""

FIELDS = "\n".join([
    _TLS.strip(),
    *(prefixed(f"tls.{side}", _TLS_SIDE) for side in (CLIENT, SERVER)),
    *(prefixed(f"tls.{side}.x509", _X509) for side in (CLIENT, SERVER)),
    _TLS_DETAILED.strip(),
    *(prefixed(f"tls.detailed.{chain}", _X509) for chain in ("server_certificate_chain", "client_certificate_chain")),
])


@dataclass
class Side:
    """What one direction of the connection showed of the handshake."""

    role: str | None = None  # "client"/"server", from the messages it sent
    hello: ClientHello | ServerHello | None = None
    certificates: list[Certificate] = field(default_factory=list)
    certificate_requested: bool = False
    key_exchanged: bool = False  # sent a (Client|Server)KeyExchange: not a resumed session
    ocsp_status: int | None = None  # the last CertificateStatus; None when it was not OCSP
    named_curve: int | None = None
    alerts: list[Alert] = field(default_factory=list)

    @property
    def has_info(self) -> bool:
        return self.hello is not None or bool(self.alerts) or bool(self.certificates)


@dataclass(frozen=True)
class Options:
    send_certificates: bool = True
    include_raw_certificates: bool = False
    include_detailed_fields: bool = True
    fingerprints: tuple[str, ...] = ("sha1",)
    include_ja4: bool = False
    include_curve: bool = False
    ja3s: str = "standard"


def hello_fields(hello: ClientHello | ServerHello) -> dict[str, Any]:
    out: dict[str, Any] = {"version": f"{hello.version >> 8}.{hello.version & 0xFF}"}
    if hello.session_id:
        out["session_id"] = hello.session_id.hex()
    if hello.random:
        out["random"] = hello.random.hex()
    if isinstance(hello, ClientHello) and hello.compression_methods:
        out["supported_compression_methods"] = [compression_name(m) for m in hello.compression_methods]
    else:
        out["selected_compression_method"] = compression_name(
            hello.compression_method if isinstance(hello, ServerHello) else 0)
    rendered = ext_render.render(hello.extensions)
    if rendered:
        out["extensions"] = rendered
    return out


def _certificate_fields(certs: list[Certificate], target: dict[str, Any], options: Options) -> None:
    """hash.*, subject, issuer, not_before, not_after of the leaf (ECS tls.client/tls.server)."""
    leaf = certs[0]
    hashes = leaf.hashes(options.fingerprints)
    if hashes:
        target["hash"] = hashes
    target["subject"] = leaf.subject_dn
    target["issuer"] = leaf.issuer_dn
    target["not_after"] = leaf.not_after
    target["not_before"] = leaf.not_before


def _key_share_group(hello: ServerHello) -> int | None:
    data = hello.extension(EXT_KEY_SHARE)
    return (data[0] << 8) | data[1] if data is not None and len(data) >= 2 else None


def _resumption_method(client: Side, server: Side, client_hello: ClientHello | None,
                       server_hello: ServerHello | None) -> str | None:
    """"id" or "ticket" when the handshake resumed a session, else None.

    TLS 1.3 says whether it resumed: the ServerHello carries pre_shared_key (its echoed
    legacy session id means nothing).  Up to TLS 1.2 it can only be inferred: a session
    id echoed back, or a ticket offered and acknowledged, with no key exchange message on
    either side.  The method keeps Packetbeat's naming, a ticket winning when both are
    seen; a TLS 1.3 resumption shows neither only when the client sent no legacy session
    id, and its PSK is then a ticket.
    """
    tls13 = server_hello is not None and is_tls13(server_hello.negotiated_version)
    if tls13:
        assert server_hello is not None
        if server_hello.extension(EXT_PRE_SHARED_KEY) is None:
            return None
    elif client.key_exchanged or server.key_exchanged:
        return None
    if client_hello is None or server_hello is None:
        return None
    ticket = client_hello.extension(EXT_SESSION_TICKET)
    if ticket and server_hello.extension(EXT_SESSION_TICKET) is not None:
        return "ticket"
    if client_hello.session_id and client_hello.session_id == server_hello.session_id:
        return "id"
    return "ticket" if tls13 else None


class _Parts:
    """The event's `tls` object being filled: its top level, client, server and detailed parts, in the order
    Packetbeat writes their keys."""

    __slots__ = ("client", "detailed", "server", "tls")

    def __init__(self) -> None:
        self.tls: dict[str, Any] = {}
        self.client: dict[str, Any] = {}
        self.server: dict[str, Any] = {}
        self.detailed: dict[str, Any] = {}


def tls_fields(client: Side, server: Side, established: bool, options: Options) -> tuple[dict[str, Any], str | None]:
    """The event's `tls` object, and the SNI host name (destination.domain)."""
    parts = _Parts()
    client_hello = client.hello if isinstance(client.hello, ClientHello) else None
    server_hello = server.hello if isinstance(server.hello, ServerHello) else None
    domain = _client_hello(parts, client_hello, options) if client_hello is not None else None
    if server_hello is not None:
        _server_hello(parts, server_hello, options)
    if server.ocsp_status is not None:
        parts.detailed["ocsp_response"] = ocsp_status_name(server.ocsp_status)
    _certificates(parts, client, server, options)
    parts.detailed["client_certificate_requested"] = server.certificate_requested
    _resumption(parts, client, server, client_hello, server_hello)
    _alerts(parts, client, server)
    version = None
    if server_hello is not None:
        version = server_hello.negotiated_version
    elif client_hello is not None:
        version = client_hello.version
    tls = parts.tls
    if version is not None:
        parts.detailed["version"] = version_text(version)
        tls["version_protocol"], tls["version"] = protocol_version(version)
    tls["established"] = established
    if options.include_curve:
        curve = server.named_curve
        if curve is None and server_hello is not None:
            curve = _key_share_group(server_hello)
        if curve is not None:
            tls["curve"] = group_name(curve)
    return _assemble(parts, options), domain


def _client_hello(parts: _Parts, hello: ClientHello, options: Options) -> str | None:
    """The client hello's fields; returns its SNI host name."""
    parts.detailed["client_hello"] = hello_fields(hello)
    tls_client = parts.client
    tls_client["ja3"] = ja3(hello)
    if options.include_ja4:
        tls_client["ja4"] = ja4(hello)
    if hello.cipher_suites:
        tls_client["supported_ciphers"] = [cipher_name(c) for c in hello.cipher_suites]
    domain = ext_render.first_value(hello.extensions, EXT_SERVER_NAME) or None
    if domain:
        tls_client["server_name"] = domain
    return domain


def _server_hello(parts: _Parts, hello: ServerHello, options: Options) -> None:
    parts.detailed["server_hello"] = hello_fields(hello)
    parts.tls["cipher"] = cipher_name(hello.cipher_suite)
    parts.server["ja3s"] = ja3s(hello, options.ja3s)
    protocol = ext_render.first_value(hello.extensions, EXT_ALPN)
    if protocol:
        parts.tls["next_protocol"] = protocol


def _certificates(parts: _Parts, client: Side, server: Side, options: Options) -> None:
    detailed = parts.detailed
    if options.send_certificates:
        for side, prefix in ((client, CLIENT), (server, SERVER)):
            if side.certificates:
                detailed[f"{prefix}_certificate"] = side.certificates[0].x509_fields()
                if len(side.certificates) > 1:
                    detailed[f"{prefix}_certificate_chain"] = [c.x509_fields() for c in side.certificates[1:]]
    for side, target in ((client, parts.client), (server, parts.server)):
        if side.certificates:
            if options.include_raw_certificates:
                target["certificate_chain"] = [c.pem() for c in side.certificates]
            _certificate_fields(side.certificates, target, options)


def _resumption(parts: _Parts, client: Side, server: Side, client_hello: ClientHello | None,
                server_hello: ServerHello | None) -> None:
    method = _resumption_method(client, server, client_hello, server_hello)
    parts.tls["resumed"] = method is not None
    if method is not None:
        parts.detailed["resumption_method"] = method


def _alerts(parts: _Parts, client: Side, server: Side) -> None:
    alerts = [(a, CLIENT) for a in client.alerts] + [(a, SERVER) for a in server.alerts]
    if alerts:
        parts.detailed["alerts"] = [{"severity": alert_level_name(a.level), "code": a.description,
                                     "type": alert_name(a.description), "source": source} for a, source in alerts]
        parts.detailed["alert_types"] = [alert_name(a.description) for a, _ in alerts]


def _assemble(parts: _Parts, options: Options) -> dict[str, Any]:
    tls = parts.tls
    if options.include_detailed_fields:
        detailed = parts.detailed
        for prefix, target in ((CLIENT, parts.client), (SERVER, parts.server)):
            leaf = detailed.pop(f"{prefix}_certificate", None)
            if leaf is not None:
                target["x509"] = leaf
        tls["detailed"] = detailed
    if parts.client:
        tls["client"] = parts.client
    if parts.server:
        tls["server"] = parts.server
    return tls
