"""TLS: one event per connection describing its handshake (no decryption).

The event is published once:

- when both directions have switched to encrypted records (ChangeCipherSpec,
  or the first application-data record after a TLS 1.3 ServerHello): the
  handshake completed, `event.end` is that moment;
- on a fatal alert;
- when the connection ends (FIN/RST), idles out, or loses bytes (a gap) in
  a direction still in its handshake: what was seen so far, not established.

Connections that never showed a hello, a certificate or an alert (not TLS,
or picked up mid-stream) give no event.  Nothing is parsed after the event:
the rest of the connection is encrypted application data.

Fields are Packetbeat's (ECS `tls.*`, `tls.detailed.*`, destination.domain
from SNI, no byte counts).  pktbeat additions, off by default so events match
Packetbeat's key for key: `include_ja4: true` adds `tls.client.ja4` (FoxIO
JA4 of the ClientHello) and `include_curve: true` adds ECS `tls.curve` (the
ECDHE group of a ServerKeyExchange, or of a TLS 1.3 ServerHello key_share).

Where pktbeat goes its own way: bytes that are not TLS (another protocol's
cleartext before STARTTLS, on a port configured for TLS) are skipped until
a handshake record starts, up to `RESYNC_LIMIT` bytes per direction, and
the event starts at the first record; a gap in a direction already encrypted is
ignored; an idle connection's unfinished handshake is still reported; when
the hellos show the transport guessed client and server the wrong way round,
the event follows the hellos; without any hello, `tls.version` is left out
(Packetbeat would print "0.0").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.config.typed import opt
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext, Transaction
from agent.protocols.errors import ParseError
from agent.protocols.stream import SessionBase, completed
from agent.protocols.tls.certificates import FINGERPRINT_ALGORITHMS, Certificate, fingerprint_algorithm
from agent.protocols.tls.fields import CLIENT, FIELDS, SERVER, Options, Side, tls_fields
from agent.protocols.tls.fingerprints import JA3S_STANDARD, JA3S_VARIANTS
from agent.protocols.tls.parser import (
    RESYNC_LIMIT,
    Alert,
    CertificateRequest,
    Certificates,
    CertificateStatus,
    ChangeCipherSpec,
    ClientHello,
    ClientKeyExchange,
    DirectionParser,
    HelloRequest,
    Message,
    OversizedHandshake,
    ServerHello,
    ServerKeyExchange,
)
from agent.transport.types import Direction

FATAL = 2


def _check_fingerprints(names: tuple[str, ...]) -> str | None:
    for name in names:
        if fingerprint_algorithm(str(name)) is None:
            return f"fingerprint algorithm '{name}' not found. Use one of {list(FINGERPRINT_ALGORITHMS)}"
    return None


def _check_ja3s(name: str) -> str | None:
    return None if name in JA3S_VARIANTS else f"'{name}' is not one of {list(JA3S_VARIANTS)}"


@dataclass(frozen=True)
class TlsConfig(ProtocolConfig):
    send_certificates: bool = opt(True, doc="certificate details (tls.*.x509, tls.detailed.*_certificate_chain)")
    include_raw_certificates: bool = opt(False, doc="the PEM chain in tls.client/server.certificate_chain")
    include_detailed_fields: bool = opt(True, doc="tls.detailed.* and tls.*.x509")
    fingerprints: tuple[str, ...] = opt(("sha1",), check=_check_fingerprints,
                                        doc="certificate hashes: md5, sha1, sha256")
    # pktbeat additions, off by default so events stay as Packetbeat's:
    include_ja4: bool = opt(False, doc="the client's JA4 fingerprint in tls.client.ja4")
    include_curve: bool = opt(False, doc="the key exchange group in tls.curve")
    ja3s: str = opt(JA3S_STANDARD, check=_check_ja3s,
                    doc="tls.server.ja3s recipe: standard (Salesforce, as tshark/Suricata/Zeek) or packetbeat")


_OPTIONS: dict[int, tuple[TlsConfig, Options]] = {}  # by config identity (configs hold dicts: unhashable)


def _options(config: TlsConfig) -> Options:
    cached = _OPTIONS.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    algorithms: list[str] = []
    for name in config.fingerprints:
        canonical = fingerprint_algorithm(name)
        if canonical is not None and canonical not in algorithms:
            algorithms.append(canonical)
    options = Options(config.send_certificates, config.include_raw_certificates, config.include_detailed_fields,
                      tuple(algorithms), config.include_ja4, config.include_curve, config.ja3s)
    if len(_OPTIONS) < 64:  # one per protocol config in practice; the config stays referenced, its id unique
        _OPTIONS[id(config)] = (config, options)
    return options


class _Direction:
    """Parser and collected facts of one direction."""

    __slots__ = ("dead", "encrypted", "parser", "side")

    def __init__(self, direction: Direction) -> None:
        self.parser = DirectionParser(direction)
        self.side = Side()
        self.encrypted = False
        self.dead = False  # not TLS, or out of sync after a gap: its bytes are ignored


class TlsSession(SessionBase[TlsConfig]):
    def __init__(self, ctx: SessionContext[TlsConfig]) -> None:
        super().__init__(ctx)
        self.options = _options(ctx.config)
        self.dirs = (_Direction(Direction.TO_SERVER), _Direction(Direction.TO_CLIENT))
        self.start_ns: int | None = None
        self.published = False

    # -- StreamSession -------------------------------------------------------------

    def _readable(self, direction: Direction) -> _Direction | None:
        """The direction's state while its handshake is still read; None once published, encrypted or given up."""
        if self.published:
            return None
        state = self.dirs[direction]
        return None if state.encrypted or state.dead else state

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        state = self._readable(direction)
        if state is None:
            return
        if self.start_ns is None and not state.parser.resyncing:
            self.start_ns = ts_ns
        self._parse(direction, state, data, ts_ns)

    def _parse(self, direction: Direction, state: _Direction, data: bytes, ts_ns: int) -> None:
        parser = state.parser
        messages, error = completed(lambda: parser.feed(data, ts_ns))
        for message in messages:
            if self.start_ns is None:
                self.start_ns = ts_ns
            self._handle(direction, state, message, ts_ns)
            if self.published:
                break
        if error is not None:
            raise error
        if parser.resyncing and parser.skipped > RESYNC_LIMIT:
            state.dead = True
            self.counters.inc("resync_abandoned")

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        state = self._readable(direction)
        if state is None:
            return
        # Records cannot be found again after lost bytes: report what the handshake showed so far.
        self.counters.inc("gaps")
        state.dead = True
        self._publish(ts_ns, established_at=None)

    def fin(self, direction: Direction, ts_ns: int) -> None:
        self._publish(ts_ns, established_at=None)

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        """Bytes that are not TLS: look for a later handshake record (STARTTLS on a TLS port) within a limit."""
        if self.published:
            return
        state = self.dirs[direction]
        counters = self.counters
        if not state.parser.records:
            counters.inc("not_tls")
            if not any(d.parser.records for d in self.dirs):
                self.start_ns = None  # the TLS session starts where its first record is found
        while not state.dead and not self.published:  # each round skips at least one byte
            counters.inc("parse_errors")
            counters.inc("resyncs")
            state.parser.resync()
            try:
                self._parse(direction, state, b"", ts_ns)
                return
            except ParseError:
                continue

    def expire(self, ts_ns: int) -> None:
        self._publish(ts_ns, established_at=None)

    def pending(self) -> int:
        return 0 if self.published or not self._has_info() else 1

    def buffered(self) -> int:
        return self.dirs[0].parser.buffered + self.dirs[1].parser.buffered

    # -- messages ----------------------------------------------------------------------

    def _handle(self, direction: Direction, state: _Direction, message: Message, ts_ns: int) -> None:
        handler = _HANDLERS.get(type(message))
        if handler is not None:
            handler(self, direction, state, message, ts_ns)

    def _change_cipher_spec(self, direction: Direction, state: _Direction, message: Message, ts_ns: int) -> None:
        state.encrypted = True
        if all(d.encrypted for d in self.dirs):
            self._publish(ts_ns, established_at=ts_ns)

    def _client_hello(self, direction: Direction, state: _Direction, message: Message, ts_ns: int) -> None:
        assert isinstance(message, ClientHello)
        state.side.role = CLIENT
        state.side.hello = message

    def _server_hello(self, direction: Direction, state: _Direction, message: Message, ts_ns: int) -> None:
        assert isinstance(message, ServerHello)
        state.side.role = SERVER
        state.side.hello = message
        if state.parser.app_data_ends_handshake:  # TLS 1.3: the peer's next records are encrypted too
            self.dirs[direction.other].parser.app_data_ends_handshake = True

    def _certificates(self, direction: Direction, state: _Direction, message: Message, ts_ns: int) -> None:
        assert isinstance(message, Certificates)
        certs = [Certificate.load(der) for der in message.ders]
        if all(c is not None for c in certs):
            state.side.certificates.extend(c for c in certs if c is not None)
        else:
            self.counters.inc("invalid_certificates")

    def _alert(self, direction: Direction, state: _Direction, message: Message, ts_ns: int) -> None:
        assert isinstance(message, Alert)
        state.side.alerts.append(message)
        if message.level == FATAL:
            self._publish(ts_ns, established_at=None)

    def _server_key_exchange(self, direction: Direction, state: _Direction, message: Message, ts_ns: int) -> None:
        assert isinstance(message, ServerKeyExchange)
        side = state.side
        side.role = SERVER
        side.key_exchanged = True
        side.named_curve = message.named_curve

    def _client_key_exchange(self, direction: Direction, state: _Direction, message: Message, ts_ns: int) -> None:
        state.side.role = CLIENT
        state.side.key_exchanged = True

    def _certificate_request(self, direction: Direction, state: _Direction, message: Message, ts_ns: int) -> None:
        state.side.role = SERVER
        state.side.certificate_requested = True

    def _certificate_status(self, direction: Direction, state: _Direction, message: Message, ts_ns: int) -> None:
        assert isinstance(message, CertificateStatus)
        state.side.ocsp_status = message.ocsp_status

    def _hello_request(self, direction: Direction, state: _Direction, message: Message, ts_ns: int) -> None:
        state.side.role = SERVER

    def _oversized(self, direction: Direction, state: _Direction, message: Message, ts_ns: int) -> None:
        self.counters.inc("oversized_handshake_messages")

    # -- the event ---------------------------------------------------------------------

    def _has_info(self) -> bool:
        return any(d.side.has_info for d in self.dirs)

    def _publish(self, ts_ns: int, established_at: int | None) -> None:
        if self.published:
            return
        self.published = True
        to_server, to_client = self.dirs
        # Nothing is parsed from here on: drop buffers and handshake state (connections can live for hours).
        self.dirs = (_Direction(Direction.TO_SERVER), _Direction(Direction.TO_CLIENT))
        if not (to_server.side.has_info or to_client.side.has_info):
            return
        conn = self.ctx.conn
        client, server = to_server, to_client
        # The hellos tell who is who when the transport guessed the other way round.
        if client.side.role == SERVER or server.side.role == CLIENT:
            client, server = server, client
            conn = conn.reversed()
        established = server.encrypted
        fields, domain = tls_fields(client.side, server.side, established, self.options)
        counters = self.counters
        counters.inc("handshakes")
        if not established:
            counters.inc("not_established")
        self.ctx.emit(Transaction(
            type="tls",
            conn=conn,
            ts_ns=self.start_ns if self.start_ns is not None else ts_ns,
            end_ns=established_at,
            status="OK" if established else "Error",
            fields={"tls": fields},
            domain=domain,
        ))


# How each message updates its direction's facts (by message class).
_HANDLERS: dict[type, Callable[[TlsSession, Direction, _Direction, Message, int], None]] = {
    ChangeCipherSpec: TlsSession._change_cipher_spec,
    ClientHello: TlsSession._client_hello,
    ServerHello: TlsSession._server_hello,
    Certificates: TlsSession._certificates,
    Alert: TlsSession._alert,
    ServerKeyExchange: TlsSession._server_key_exchange,
    ClientKeyExchange: TlsSession._client_key_exchange,
    CertificateRequest: TlsSession._certificate_request,
    CertificateStatus: TlsSession._certificate_status,
    HelloRequest: TlsSession._hello_request,
    OversizedHandshake: TlsSession._oversized,
}


SPEC = ProtocolSpec(
    name="tls",
    config_class=TlsConfig,
    fields=FIELDS,
    tcp=TlsSession,
    description="TLS handshakes: version, cipher, SNI, ALPN, JA3/JA3S/JA4, certificates, alerts",
    counters=("handshakes", "not_established", "parse_errors", "not_tls", "resyncs", "resync_abandoned", "gaps",
              "oversized_handshake_messages", "invalid_certificates"),
)

