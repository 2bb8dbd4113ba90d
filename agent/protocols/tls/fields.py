"""What one handshake becomes in the event: ECS `tls.*` and Packetbeat's `tls.detailed.*`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


def tls_fields(client: Side, server: Side, established: bool, options: Options) -> tuple[dict[str, Any], str | None]:
    """The event's `tls` object, and the SNI host name (destination.domain)."""
    tls: dict[str, Any] = {}
    tls_client: dict[str, Any] = {}
    tls_server: dict[str, Any] = {}
    detailed: dict[str, Any] = {}
    client_hello = client.hello if isinstance(client.hello, ClientHello) else None
    server_hello = server.hello if isinstance(server.hello, ServerHello) else None
    domain = None
    if client_hello is not None:
        detailed["client_hello"] = hello_fields(client_hello)
        tls_client["ja3"] = ja3(client_hello)
        if options.include_ja4:
            tls_client["ja4"] = ja4(client_hello)
        if client_hello.cipher_suites:
            tls_client["supported_ciphers"] = [cipher_name(c) for c in client_hello.cipher_suites]
        domain = ext_render.first_value(client_hello.extensions, EXT_SERVER_NAME) or None
        if domain:
            tls_client["server_name"] = domain
    if server_hello is not None:
        detailed["server_hello"] = hello_fields(server_hello)
        tls["cipher"] = cipher_name(server_hello.cipher_suite)
        tls_server["ja3s"] = ja3s(server_hello, options.ja3s)
        protocol = ext_render.first_value(server_hello.extensions, EXT_ALPN)
        if protocol:
            tls["next_protocol"] = protocol
    if server.ocsp_status is not None:
        detailed["ocsp_response"] = ocsp_status_name(server.ocsp_status)
    if options.send_certificates:
        for side, prefix in ((client, CLIENT), (server, SERVER)):
            if side.certificates:
                detailed[f"{prefix}_certificate"] = side.certificates[0].x509_fields()
                if len(side.certificates) > 1:
                    detailed[f"{prefix}_certificate_chain"] = [c.x509_fields() for c in side.certificates[1:]]
    for side, target in ((client, tls_client), (server, tls_server)):
        if side.certificates:
            if options.include_raw_certificates:
                target["certificate_chain"] = [c.pem() for c in side.certificates]
            _certificate_fields(side.certificates, target, options)
    detailed["client_certificate_requested"] = server.certificate_requested

    method = _resumption_method(client, server, client_hello, server_hello)
    tls["resumed"] = method is not None
    if method is not None:
        detailed["resumption_method"] = method

    alerts = [(a, CLIENT) for a in client.alerts] + [(a, SERVER) for a in server.alerts]
    if alerts:
        detailed["alerts"] = [{"severity": alert_level_name(a.level), "code": a.description,
                               "type": alert_name(a.description), "source": source} for a, source in alerts]
        detailed["alert_types"] = [alert_name(a.description) for a, _ in alerts]

    version = None
    if server_hello is not None:
        version = server_hello.negotiated_version
    elif client_hello is not None:
        version = client_hello.version
    if version is not None:
        detailed["version"] = version_text(version)
        tls["version_protocol"], tls["version"] = protocol_version(version)
    tls["established"] = established

    if options.include_curve:
        curve = server.named_curve
        if curve is None and server_hello is not None:
            curve = _key_share_group(server_hello)
        if curve is not None:
            tls["curve"] = group_name(curve)

    if options.include_detailed_fields:
        for prefix, target in ((CLIENT, tls_client), (SERVER, tls_server)):
            leaf = detailed.pop(f"{prefix}_certificate", None)
            if leaf is not None:
                target["x509"] = leaf
        tls["detailed"] = detailed
    if tls_client:
        tls["client"] = tls_client
    if tls_server:
        tls["server"] = tls_server
    return tls, domain
