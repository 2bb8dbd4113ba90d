"""Building TLS wire bytes for tests: records, handshake messages, extensions, certificates.

Everything is spelled out from the RFC layouts so a test says exactly which
bytes it sends (lengths included), without a TLS library in between.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

HANDSHAKE, ALERT, CCS, APP_DATA = 22, 21, 20, 23


def u8(v: int) -> bytes:
    return bytes((v,))


def u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def u24(v: int) -> bytes:
    return v.to_bytes(3, "big")


def vec8(data: bytes) -> bytes:
    return u8(len(data)) + data


def vec16(data: bytes) -> bytes:
    return u16(len(data)) + data


def vec24(data: bytes) -> bytes:
    return u24(len(data)) + data


def record(content_type: int, payload: bytes, version: int = 0x0303) -> bytes:
    return u8(content_type) + u16(version) + vec16(payload)


def records(content_type: int, payload: bytes, size: int, version: int = 0x0303) -> bytes:
    """`payload` cut into records of at most `size` bytes (a fragmented handshake)."""
    return b"".join(record(content_type, payload[i:i + size], version) for i in range(0, len(payload), size))


def handshake(msg_type: int, body: bytes) -> bytes:
    return u8(msg_type) + vec24(body)


def ext(ext_type: int, data: bytes = b"") -> bytes:
    return u16(ext_type) + vec16(data)


def sni(*names: str) -> bytes:
    return ext(0, vec16(b"".join(u8(0) + vec16(n.encode()) for n in names)))


def alpn(*protocols: str) -> bytes:
    return ext(16, vec16(b"".join(vec8(p.encode()) for p in protocols)))


def groups(*values: int) -> bytes:
    return ext(10, vec16(b"".join(u16(v) for v in values)))


def point_formats(*values: int) -> bytes:
    return ext(11, vec8(bytes(values)))


def signature_algorithms(*values: int) -> bytes:
    return ext(13, vec16(b"".join(u16(v) for v in values)))


def client_versions(*values: int) -> bytes:
    return ext(43, vec8(b"".join(u16(v) for v in values)))


def server_version(value: int) -> bytes:
    return ext(43, u16(value))


def key_share_server(group: int, key: bytes = b"\x11" * 32) -> bytes:
    return ext(51, u16(group) + vec16(key))


def status_request() -> bytes:
    return ext(5, u8(1) + u16(0) + u16(0))


def session_ticket(data: bytes = b"") -> bytes:
    return ext(35, data)


def client_hello(*, version: int = 0x0303, random: bytes = bytes(range(32)), session_id: bytes = b"",
                 ciphers: Sequence[int] = (0xC02F, 0xC030, 0x009C), compression: Sequence[int] = (0,),
                 extensions: Iterable[bytes] | None = ()) -> bytes:
    """A ClientHello handshake message (type + length + body); extensions=None omits the block."""
    body = u16(version) + random + vec8(session_id) + vec16(b"".join(u16(c) for c in ciphers))
    body += vec8(bytes(compression))
    if extensions is not None:
        body += vec16(b"".join(extensions))
    return handshake(1, body)


def server_hello(*, version: int = 0x0303, random: bytes = bytes(range(100, 132)), session_id: bytes = b"",
                 cipher: int = 0xC02F, compression: int = 0, extensions: Iterable[bytes] | None = ()) -> bytes:
    body = u16(version) + random + vec8(session_id) + u16(cipher) + u8(compression)
    if extensions is not None:
        body += vec16(b"".join(extensions))
    return handshake(2, body)


def certificate(*ders: bytes) -> bytes:
    return handshake(11, vec24(b"".join(vec24(d) for d in ders)))


def server_key_exchange_ecdhe(curve: int = 23) -> bytes:
    return handshake(12, u8(3) + u16(curve) + vec8(b"\x04" + b"\x22" * 64) + u16(0x0403) + vec16(b"\x30" * 8))


def certificate_request() -> bytes:
    return handshake(13, vec8(b"\x01\x40") + vec16(b""))


def server_hello_done() -> bytes:
    return handshake(14, b"")


def client_key_exchange() -> bytes:
    return handshake(16, vec8(b"\x04" + b"\x33" * 64))


def certificate_status(ocsp_der: bytes) -> bytes:
    return handshake(22, u8(1) + vec24(ocsp_der))


def alert(level: int, description: int) -> bytes:
    return record(ALERT, bytes((level, description)))


CHANGE_CIPHER_SPEC = record(CCS, b"\x01")


def app_data(size: int = 40) -> bytes:
    return record(APP_DATA, b"\xaa" * size)


# -- certificates ----------------------------------------------------------------


def make_name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


CA_NAME = make_name((NameOID.COUNTRY_NAME, "FR"), (NameOID.ORGANIZATION_NAME, "Example CA Org"),
                    (NameOID.ORGANIZATIONAL_UNIT_NAME, "Test Unit"), (NameOID.COMMON_NAME, "Example Test CA"))
LEAF_NAME = make_name((NameOID.COUNTRY_NAME, "US"), (NameOID.STATE_OR_PROVINCE_NAME, "California"),
                      (NameOID.LOCALITY_NAME, "Los Angeles"), (NameOID.ORGANIZATION_NAME, "Acme, Inc."),
                      (NameOID.COMMON_NAME, "www.example.test"), (NameOID.EMAIL_ADDRESS, "ops@example.test"))


def make_certificate(subject: x509.Name, issuer: x509.Name, key: object, signing_key: object, *,
                     serial: int, sans: Sequence[x509.GeneralName] = (), ca: bool = False) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key())  # type: ignore[attr-defined]
               .serial_number(serial)
               .not_valid_before(datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC))
               .not_valid_after(datetime.datetime(2034, 1, 2, 3, 4, 5, tzinfo=datetime.UTC))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signing_key, hashes.SHA256())  # type: ignore[arg-type]


def make_chain() -> tuple[x509.Certificate, x509.Certificate]:
    """(leaf, CA): an EC P-256 leaf with SANs signed by an RSA-2048 CA."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    ca = make_certificate(CA_NAME, CA_NAME, ca_key, ca_key, serial=0x0ABC, ca=True)
    sans = [x509.DNSName("www.example.test"), x509.DNSName("example.test"),
            x509.RFC822Name("ops@example.test"), x509.IPAddress(ipaddress.ip_address("192.0.2.7"))]
    leaf = make_certificate(LEAF_NAME, CA_NAME, leaf_key, ca_key, serial=0x00F00DCAFE, sans=sans)
    return leaf, ca


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)
