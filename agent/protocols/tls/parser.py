"""Sans-IO parsing of one direction of a TLS connection, up to the end of its plaintext handshake.

Bytes go in with `feed`; `messages()` yields the typed messages that are
complete.  The record layer is reassembled across TCP segments and handshake
messages across records; alert and application-data records may sit between
the records of a fragmented handshake message.  Parsing ends for good at
ChangeCipherSpec (everything after it is encrypted) or, once TLS 1.3 has been
negotiated, at the first application-data record.

Every buffer is bounded: one record (`MAX_RECORD_PAYLOAD`) and one handshake
message (`MAX_HANDSHAKE_MESSAGE`, `MAX_CERTIFICATE_MESSAGE`).  A longer
handshake message is skipped as it streams past, never buffered, and
reported as `OversizedHandshake`.  Input that is not TLS raises `ParseError`.

After a `ParseError` (`resync`), the parser looks for the next record that
starts a handshake: a handshake record header, a ClientHello or ServerHello
header, and that hello's protocol version, eleven bytes with four of them
fixed, where cleartext hardly ever matches.  That is how a connection whose
first bytes are another protocol's (STARTTLS in LDAP, IMAP, POP3 or FTP on a
port configured for TLS) is still read once it switches.  Bytes skipped are
counted in `skipped`; the session gives up past `RESYNC_LIMIT`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from agent.protocols.buffer import ReceiveBuffer
from agent.protocols.errors import ParseError
from agent.protocols.stream import CarryCompleted
from agent.protocols.tls.tables import ECDHE_CIPHERS, is_grease
from agent.transport.types import Direction

PROTOCOL = "tls"

RECORD_HEADER = 5
# A TLSCiphertext fragment may exceed 2^14 by up to 2048 bytes (RFC 5246 section 6.2.3).
MAX_RECORD_PAYLOAD = (1 << 14) + 2048
# Handshake messages longer than this are skipped, not buffered (the Go stdlib's limit)...
MAX_HANDSHAKE_MESSAGE = 1 << 16
# ...except certificate chains, which legitimately grow larger.
MAX_CERTIFICATE_MESSAGE = 1 << 18
# Cleartext skipped while looking for the handshake, per direction, before the direction is given up.
RESYNC_LIMIT = 64 * 1024
_HELLO_PROBE = 11  # record header, handshake header, hello version

CONTENT_CHANGE_CIPHER_SPEC = 20
CONTENT_ALERT = 21
CONTENT_HANDSHAKE = 22
CONTENT_APPLICATION_DATA = 23

HS_HELLO_REQUEST = 0
HS_CLIENT_HELLO = 1
HS_SERVER_HELLO = 2
HS_CERTIFICATE = 11
HS_SERVER_KEY_EXCHANGE = 12
HS_CERTIFICATE_REQUEST = 13
HS_CLIENT_KEY_EXCHANGE = 16
HS_CERTIFICATE_STATUS = 22

EXT_SERVER_NAME = 0
EXT_SUPPORTED_GROUPS = 10
EXT_EC_POINT_FORMATS = 11
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ALPN = 16
EXT_SESSION_TICKET = 35
EXT_PRE_SHARED_KEY = 41
EXT_SUPPORTED_VERSIONS = 43
EXT_KEY_SHARE = 51

# A ServerHello with this random is a TLS 1.3 HelloRetryRequest (RFC 8446 section 4.1.3).
HELLO_RETRY_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


@dataclass(frozen=True, slots=True)
class Extension:
    type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ClientHello:
    version: int  # legacy_version, e.g. 0x0303
    random: bytes  # 32 bytes
    session_id: bytes
    cipher_suites: tuple[int, ...]  # offered, GREASE removed
    compression_methods: tuple[int, ...]
    extensions: tuple[Extension, ...]  # in order, GREASE removed

    def extension(self, ext_type: int) -> bytes | None:
        return extension_data(self.extensions, ext_type)


@dataclass(frozen=True, slots=True)
class ServerHello:
    version: int
    random: bytes
    session_id: bytes
    cipher_suite: int
    compression_method: int
    extensions: tuple[Extension, ...]

    def extension(self, ext_type: int) -> bytes | None:
        return extension_data(self.extensions, ext_type)

    @property
    def negotiated_version(self) -> int:
        """supported_versions when the server sent it (TLS 1.3), else the hello's version."""
        selected = self.extension(EXT_SUPPORTED_VERSIONS)
        if selected is not None and len(selected) >= 2:
            return (selected[0] << 8) | selected[1]
        return self.version

    @property
    def is_hello_retry_request(self) -> bool:
        return self.random == HELLO_RETRY_RANDOM


@dataclass(frozen=True, slots=True)
class Certificates:
    """A Certificate message's chain, leaf first, as DER; checked for structure, not yet as X.509."""

    ders: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    pass


@dataclass(frozen=True, slots=True)
class ServerKeyExchange:
    named_curve: int | None  # ECDHE suites: the curve of the server's ephemeral key


@dataclass(frozen=True, slots=True)
class ClientKeyExchange:
    pass


@dataclass(frozen=True, slots=True)
class HelloRequest:
    pass


@dataclass(frozen=True, slots=True)
class CertificateStatus:
    ocsp_status: int | None  # OCSPResponseStatus, None when the message is not an OCSP response


@dataclass(frozen=True, slots=True)
class Alert:
    level: int
    description: int


@dataclass(frozen=True, slots=True)
class ChangeCipherSpec:
    """This direction is encrypted from here on (by ChangeCipherSpec, or TLS 1.3 application data)."""

    by_application_data: bool = False


@dataclass(frozen=True, slots=True)
class OversizedHandshake:
    """A handshake message over the size limit, skipped without being buffered."""

    msg_type: int
    length: int


Message = (ClientHello | ServerHello | Certificates | CertificateRequest | ServerKeyExchange | ClientKeyExchange
           | HelloRequest | CertificateStatus | Alert | ChangeCipherSpec | OversizedHandshake)


def extension_data(extensions: tuple[Extension, ...], ext_type: int) -> bytes | None:
    """The body of extension `ext_type` (the last one when it is repeated), or None."""
    found = None
    for ext in extensions:
        if ext.type == ext_type:
            found = ext.data
    return found


class _Malformed(Exception):
    """A handshake message that cannot be what its type says; becomes a ParseError."""


class DirectionParser:
    """The record layer and handshake messages of one direction."""

    __slots__ = ("_cipher", "_hs", "_skip", "app_data_ends_handshake", "buf", "direction", "encrypted", "records",
                 "resyncing", "skipped")

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.encrypted = False
        # Set once TLS 1.3 is negotiated: the first application-data record then ends the plaintext handshake.
        self.app_data_ends_handshake = False
        self.records = 0  # complete records parsed
        # The record layer; a record in many segments is joined once, when complete.
        self.buf = ReceiveBuffer(PROTOCOL, direction, RECORD_HEADER + MAX_RECORD_PAYLOAD)
        self._hs = bytearray()  # a handshake message being reassembled across records
        self._skip = 0  # bytes of an oversized handshake message still to skip
        self._cipher: int | None = None  # the cipher this direction's ServerHello selected
        self.resyncing = False  # looking for the next handshake record after bytes that were not TLS
        self.skipped = 0  # bytes passed over while resynchronising

    @property
    def buffered(self) -> int:
        return self.buf.buffered + len(self._hs)

    def feed(self, data: bytes, ts_ns: int) -> list[Message]:
        """Every message `data` completes; ParseError on input that is not TLS (it carries the messages
        completed before it, `error.messages`).  Nothing is parsed once the direction is encrypted."""
        out: list[Message] = []
        if self.encrypted or (data and not self.buf.feed(data, ts_ns)):
            return out
        if self.resyncing and not self._find_hello():
            return out
        with CarryCompleted(out):
            while not self.encrypted and self._record(out):
                pass
        return out

    def _record(self, out: list[Message]) -> bool:
        """The record at the read position, when complete: its messages go to `out`."""
        rb = self.buf
        buf, pos = rb.data, rb.pos
        if len(buf) - pos < RECORD_HEADER:
            return False
        content, major, length = buf[pos], buf[pos + 1], (buf[pos + 3] << 8) | buf[pos + 4]
        if major != 3:
            raise self._error(pos, f"not a TLS record (version {major}.{buf[pos + 2]})")
        if length > MAX_RECORD_PAYLOAD:
            raise self._error(pos, f"record length {length} exceeds {MAX_RECORD_PAYLOAD}")
        end = pos + RECORD_HEADER + length
        if end > len(buf):
            rb.wait_for(RECORD_HEADER + length)
            return False
        rb.pos = end
        self.records += 1
        if content == CONTENT_HANDSHAKE:
            out.extend(self._handshake(bytes(buf[pos + RECORD_HEADER:end]), pos))
        elif content == CONTENT_ALERT:
            if length == 2:  # longer alerts are encrypted ones
                out.append(Alert(buf[pos + 5], buf[pos + 6]))
        elif content == CONTENT_CHANGE_CIPHER_SPEC:
            self._stop()
            out.append(ChangeCipherSpec())
        elif content == CONTENT_APPLICATION_DATA and self.app_data_ends_handshake:
            self._stop()
            out.append(ChangeCipherSpec(by_application_data=True))
        return True

    def resync(self) -> None:
        """After a ParseError: drop any partial handshake message and look for the next hello record."""
        self.resyncing = True
        self._hs = bytearray()
        self._skip = 0
        rb = self.buf
        rb.release()
        if rb.pos < len(rb.data):
            rb.pos += 1
            self.skipped += 1

    def _find_hello(self) -> bool:
        """Skip to the next plausible hello record; False (keeping a possible start) while none is buffered."""
        rb = self.buf
        buf, start = rb.data, rb.pos
        pos = start
        while True:
            at = buf.find(b"\x16\x03", pos)
            if at < 0 or len(buf) - at < _HELLO_PROBE:
                # keep what may start a hello: a last 0x16, or a candidate still short of its probe bytes
                end = max(len(buf) - 1, pos) if at < 0 else at
                self.skipped += end - start
                rb.pos = end
                return False
            if (buf[at + 2] <= 4 and buf[at + 5] in (HS_CLIENT_HELLO, HS_SERVER_HELLO) and buf[at + 9] == 3
                    and buf[at + 10] <= 4):
                self.skipped += at - start
                rb.pos = at
                self.resyncing = False
                return True
            pos = at + 1

    def _stop(self) -> None:
        self.encrypted = True
        self.buf.clear()
        self._hs = bytearray()

    def _error(self, pos: int, reason: str) -> ParseError:
        return self.buf.error(reason, pos)

    def _handshake(self, payload: bytes, record_pos: int) -> Iterator[Message]:
        if self._skip:
            skipped = min(self._skip, len(payload))
            self._skip -= skipped
            payload = payload[skipped:]
        hs = self._hs
        hs += payload
        while len(hs) >= 4:
            msg_type = hs[0]
            length = (hs[1] << 16) | (hs[2] << 8) | hs[3]
            limit = MAX_CERTIFICATE_MESSAGE if msg_type == HS_CERTIFICATE else MAX_HANDSHAKE_MESSAGE
            if length > limit:
                have = len(hs) - 4
                if have >= length:
                    del hs[:4 + length]
                else:
                    self._skip = length - have
                    hs.clear()
                yield OversizedHandshake(msg_type, length)
                continue
            if len(hs) < 4 + length:
                break
            body = bytes(hs[4:4 + length])
            del hs[:4 + length]
            try:
                message = self._parse_handshake(msg_type, body)
            except _Malformed as exc:
                raise self._error(record_pos, str(exc)) from None
            if message is not None:
                yield message

    def _parse_handshake(self, msg_type: int, body: bytes) -> Message | None:
        if msg_type == HS_CLIENT_HELLO:
            return parse_client_hello(body)
        if msg_type == HS_SERVER_HELLO:
            hello = parse_server_hello(body)
            self._cipher = hello.cipher_suite
            if is_tls13(hello.negotiated_version) and not hello.is_hello_retry_request:
                self.app_data_ends_handshake = True
            return hello
        if msg_type == HS_CERTIFICATE:
            ders = parse_certificates(body)
            return Certificates(ders) if ders else None
        if msg_type == HS_SERVER_KEY_EXCHANGE:
            curve = None
            # ECParameters: curve_type 3 (named_curve), then the 16-bit NamedGroup.
            if self._cipher in ECDHE_CIPHERS and len(body) >= 3 and body[0] == 3:
                curve = (body[1] << 8) | body[2]
            return ServerKeyExchange(curve)
        if msg_type == HS_CERTIFICATE_REQUEST:
            return CertificateRequest()
        if msg_type == HS_CLIENT_KEY_EXCHANGE:
            return ClientKeyExchange()
        if msg_type == HS_CERTIFICATE_STATUS:
            return CertificateStatus(parse_ocsp_status(body))
        if msg_type == HS_HELLO_REQUEST:
            return HelloRequest()
        return None


def is_tls13(version: int) -> bool:
    return version == 0x0304 or (version >> 8) == 0x7F  # 0x7fXX: TLS 1.3 drafts


def _common_hello(body: bytes, what: str) -> tuple[int, bytes, bytes, int]:
    """(version, random, session_id, offset after the session id)."""
    if len(body) < 35:
        raise _Malformed(f"{what} of {len(body)} bytes is too short")
    if body[0] != 3:
        raise _Malformed(f"not a TLS {what} (version {body[0]}.{body[1]})")
    sid_len = body[34]
    if sid_len > 32:
        raise _Malformed(f"{what} session id length {sid_len} is over 32")
    end = 35 + sid_len
    if end > len(body):
        raise _Malformed(f"{what} session id runs past the message")
    return (body[0] << 8) | body[1], body[2:34], body[35:end], end


def parse_client_hello(body: bytes) -> ClientHello:
    version, random, session_id, pos = _common_hello(body, "client hello")
    size = len(body)
    if pos + 2 > size:
        raise _Malformed("client hello has no cipher suites")
    length = (body[pos] << 8) | body[pos + 1]
    pos += 2
    count = (length + 1) // 2  # an odd length still reads a last, straddling value
    if pos + 2 * count > size:
        raise _Malformed("client hello cipher suites run past the message")
    suites = struct.unpack_from(f">{count}H", body, pos)
    pos += length
    if pos >= size:
        raise _Malformed("client hello has no compression methods")
    n_methods = body[pos]
    pos += 1
    if pos + n_methods > size:
        raise _Malformed("client hello compression methods run past the message")
    methods = tuple(body[pos:pos + n_methods])
    pos += n_methods
    return ClientHello(version, random, session_id, tuple(s for s in suites if not is_grease(s)), methods,
                       parse_extensions(body, pos))


def parse_server_hello(body: bytes) -> ServerHello:
    version, random, session_id, pos = _common_hello(body, "server hello")
    if pos + 3 > len(body):
        raise _Malformed("server hello has no cipher suite or compression method")
    cipher = (body[pos] << 8) | body[pos + 1]
    return ServerHello(version, random, session_id, cipher, body[pos + 2], parse_extensions(body, pos + 3))


def parse_extensions(body: bytes, start: int) -> tuple[Extension, ...]:
    """The extension block at `start` (GREASE removed); a truncated header drops the whole block."""
    size = len(body)
    if start + 2 > size:
        return ()
    limit = start + 2 + ((body[start] << 8) | body[start + 1])
    base = start + 2
    out: list[Extension] = []
    while base < limit:
        if base + 4 > size:
            return ()
        ext_type = (body[base] << 8) | body[base + 1]
        length = (body[base + 2] << 8) | body[base + 3]
        data = body[base + 4:base + 4 + length]
        base += 4 + length
        if not is_grease(ext_type):
            out.append(Extension(ext_type, data))
    return tuple(out)


def parse_certificates(body: bytes) -> tuple[bytes, ...] | None:
    """The DER certificates of a (TLS 1.2 style) Certificate message, or None when it is malformed."""
    size = len(body)
    if size < 3 or ((body[0] << 16) | (body[1] << 8) | body[2]) + 3 != size:
        return None
    pos = 3
    out: list[bytes] = []
    while pos + 3 <= size:
        length = (body[pos] << 16) | (body[pos + 1] << 8) | body[pos + 2]
        start = pos + 3
        if length == 0 or start + length > size:
            return None
        out.append(body[start:start + length])
        pos = start + length
    return tuple(out) or None


def parse_ocsp_status(body: bytes) -> int | None:
    """CertificateStatus: status_type ocsp(1), uint24 length, OCSPResponse ::= SEQUENCE { ENUMERATED status, ...}."""
    if len(body) < 6 or body[0] != 1:
        return None
    der = body[4:]
    if der[0] != 0x30:
        return None
    first = der[1]
    pos = 2 + (first & 0x7F if first & 0x80 else 0)
    if pos + 3 > len(der) or der[pos] != 0x0A or der[pos + 1] != 1:
        return None
    return der[pos + 2]
