"""X.509 certificates from the handshake, parsed with `cryptography`, shown as Packetbeat shows them.

Packetbeat is written in Go, and its certificate fields carry Go's
spellings: the distinguished name in the order Go's `pkix.Name.String()`
produces (most specific attribute first, attributes Go does not know as
`OID=#hex`), signature algorithms such as `SHA256-RSA`, serial numbers in
upper-case hex, times at millisecond precision.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import ExtensionOID

from agent import metrics

# Attribute types Go parses into named fields, with the names its Name.String() prints.
_CN, _SERIAL, _C, _L, _ST, _STREET, _O, _OU, _POSTAL = (
    "2.5.4.3", "2.5.4.5", "2.5.4.6", "2.5.4.7", "2.5.4.8", "2.5.4.9", "2.5.4.10", "2.5.4.11", "2.5.4.17")
_SHORT_NAMES = {_C: "C", _O: "O", _OU: "OU", _CN: "CN", _SERIAL: "SERIALNUMBER", _L: "L", _ST: "ST",
                _STREET: "STREET", _POSTAL: "POSTALCODE"}
# Go's canonical order of the named fields (Name.ToRDNSequence); printing reverses it.
_CANONICAL = (_C, _ST, _L, _STREET, _POSTAL, _O, _OU)
# ECS x509 name fields, in Packetbeat's order.
_NAME_FIELDS = (("country", _C), ("organization", _O), ("organizational_unit", _OU), ("locality", _L),
                ("postal_code", _POSTAL), ("serial_number", _SERIAL), ("common_name", _CN),
                ("street_address", _STREET), ("state_or_province", _ST))

_SIGNATURE_NAMES = {
    "1.2.840.113549.1.1.2": "MD2-RSA", "1.2.840.113549.1.1.4": "MD5-RSA", "1.2.840.113549.1.1.5": "SHA1-RSA",
    "1.3.14.3.2.29": "SHA1-RSA", "1.2.840.113549.1.1.11": "SHA256-RSA", "1.2.840.113549.1.1.12": "SHA384-RSA",
    "1.2.840.113549.1.1.13": "SHA512-RSA", "1.2.840.10040.4.3": "DSA-SHA1", "2.16.840.1.101.3.4.3.2": "DSA-SHA256",
    "1.2.840.10045.4.1": "ECDSA-SHA1", "1.2.840.10045.4.3.2": "ECDSA-SHA256", "1.2.840.10045.4.3.3": "ECDSA-SHA384",
    "1.2.840.10045.4.3.4": "ECDSA-SHA512", "1.3.101.112": "Ed25519",
}
_RSA_PSS = "1.2.840.113549.1.1.10"
_PSS_HASHES = {"sha256": "SHA256-RSAPSS", "sha384": "SHA384-RSAPSS", "sha512": "SHA512-RSAPSS"}

FINGERPRINT_ALGORITHMS = ("md5", "sha1", "sha256")
# Parsed certificates kept for reuse (a few KiB each): busy servers present the same chain to every client.
CERTIFICATE_CACHE_ENTRIES = 1024
_FINGERPRINT_ALIASES = {"md5": "md5", "sha1": "sha1", "sha-1": "sha1", "sha256": "sha256", "sha-256": "sha256"}


def fingerprint_algorithm(name: str) -> str | None:
    """The canonical name of a `fingerprints` entry (case-insensitive, `sha-1` accepted), None if unknown."""
    return _FINGERPRINT_ALIASES.get(name.lower())


@dataclass(frozen=True)
class Certificate:
    der: bytes
    cert: x509.Certificate

    @classmethod
    def load(cls, der: bytes) -> Certificate | None:
        """The certificate, or None when `cryptography` rejects it; servers repeat theirs, so results are cached."""
        return _CACHE.get(der)

    @classmethod
    def parse(cls, der: bytes) -> Certificate | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = cls(der, x509.load_der_x509_certificate(der))
                # cryptography decodes lazily: build the fields now, so a defect found late rejects it here.
                _ = parsed._x509
        except Exception:  # ValueError and a few others, on malformed DER
            return None
        return parsed

    # -- ECS fields --------------------------------------------------------

    @cached_property
    def subject_dn(self) -> str:
        return distinguished_name(self.cert.subject)

    @cached_property
    def issuer_dn(self) -> str:
        return distinguished_name(self.cert.issuer)

    @property
    def not_before(self) -> str:
        return format_time(self.cert.not_valid_before_utc)

    @property
    def not_after(self) -> str:
        return format_time(self.cert.not_valid_after_utc)

    def hashes(self, algorithms: tuple[str, ...]) -> dict[str, str]:
        return {name: self._hash(name) for name in algorithms}

    def _hash(self, name: str) -> str:
        digests = self._digests
        found = digests.get(name)
        if found is None:
            found = digests[name] = hashlib.new(name, self.der, usedforsecurity=False).hexdigest().upper()
        return found

    @cached_property
    def _digests(self) -> dict[str, str]:
        return {}

    @cached_property
    def _pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def pem(self) -> str:
        return self._pem

    def x509_fields(self) -> dict[str, Any]:
        """The `x509` object: tls.server.x509 for the leaf, one entry of a detailed chain otherwise (a fresh copy)."""
        return _copy(self._x509)

    @cached_property
    def _x509(self) -> dict[str, Any]:
        cert = self.cert
        algorithm, key_size = _public_key(cert)
        out: dict[str, Any] = {
            "signature_algorithm": _signature_algorithm(cert),
            "public_key_algorithm": algorithm,
            "serial_number": _serial(cert.serial_number),
            "issuer": name_fields(cert.issuer, self.issuer_dn),
            "subject": name_fields(cert.subject, self.subject_dn),
            "not_before": self.not_before,
            "not_after": self.not_after,
            "version_number": cert.version.value + 1,
        }
        if key_size > 0:
            out["public_key_size"] = key_size
        names = _alternative_names(cert)
        if names:
            out["alternative_names"] = names
        return out


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value


class CertificateCache:
    """Parsed certificates by DER, least recently used evicted beyond `limit` (rejected DER is cached too)."""

    def __init__(self, limit: int = CERTIFICATE_CACHE_ENTRIES) -> None:
        self.limit = limit
        self._entries: OrderedDict[bytes, Certificate | None] = OrderedDict()
        self.counters = metrics.register("tls.certificate_cache", ("hits", "misses", "evicted"))

    def get(self, der: bytes) -> Certificate | None:
        entries = self._entries
        if der in entries:
            entries.move_to_end(der)
            self.counters["hits"] += 1
            return entries[der]
        self.counters["misses"] += 1
        cert = Certificate.parse(der)
        entries[der] = cert
        if len(entries) > self.limit:
            entries.popitem(last=False)
            self.counters["evicted"] += 1
        return cert

    def clear(self) -> None:
        self._entries.clear()


_CACHE = CertificateCache()


def format_time(value: datetime) -> str:
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
            f"{value.second:02d}.{value.microsecond // 1000:03d}Z")


def _serial(number: int) -> str:
    return f"-{-number:X}" if number < 0 else f"{number:X}"


def _signature_algorithm(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid.dotted_string
    name = _SIGNATURE_NAMES.get(oid)
    if name is not None:
        return name
    if oid == _RSA_PSS:
        try:
            digest = cert.signature_hash_algorithm
        except Exception:
            digest = None
        if digest is not None and digest.name in _PSS_HASHES:
            return _PSS_HASHES[digest.name]
    return "0"  # Go's UnknownSignatureAlgorithm


def _public_key(cert: x509.Certificate) -> tuple[str, int]:
    """(algorithm name, size in bits) as Go's x509 reports them."""
    try:
        key = cert.public_key()
    except Exception:
        return "(unknown:0)", 0
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ECDSA", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "(unknown:4)", 0  # Go's PublicKeyAlgorithm 4, which Packetbeat does not name
    return "(unknown:0)", 0


def _alternative_names(cert: x509.Certificate) -> list[str]:
    """DNS names, then e-mail addresses, then IP addresses, as Go lists them."""
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except Exception:  # absent, or an extension cryptography cannot decode
        return []
    san = ext.value
    if not isinstance(san, x509.SubjectAlternativeName):
        return []
    names: list[str] = list(san.get_values_for_type(x509.DNSName))
    names += san.get_values_for_type(x509.RFC822Name)
    for ip in san.get_values_for_type(x509.IPAddress):
        mapped = getattr(ip, "ipv4_mapped", None)
        names.append(str(mapped if mapped is not None else ip))
    return names


# -- names -------------------------------------------------------------------


def _attributes(name: x509.Name) -> list[tuple[str, Any, int | None]]:
    """(oid, value, ASN.1 string tag) of every attribute, in certificate order."""
    out = []
    for attribute in name:
        tag = getattr(getattr(attribute, "_type", None), "value", None)
        out.append((attribute.oid.dotted_string, attribute.value, tag))
    return out


def _named_values(attributes: list[tuple[str, Any, int | None]]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for oid, value, _ in attributes:
        if oid in _SHORT_NAMES and isinstance(value, str):
            values.setdefault(oid, []).append(value)
    return values


def name_fields(name: x509.Name, dn: str) -> dict[str, str]:
    """ECS x509.{issuer,subject}.* of a name (repeated attributes joined by spaces)."""
    values = _named_values(_attributes(name))
    out: dict[str, str] = {}
    for field, oid in _NAME_FIELDS:
        found = values.get(oid)
        if not found:
            continue
        # Go keeps only the last common name and serial number; list attributes are joined.
        text = found[-1] if oid in (_CN, _SERIAL) else " ".join(found)
        if text:
            out[field] = text
    out["distinguished_name"] = dn
    return out


def distinguished_name(name: x509.Name) -> str:
    """The RFC 2253 string Go's pkix.Name.String() gives for this name."""
    attributes = _attributes(name)
    values = _named_values(attributes)
    # Attributes Go does not name come first, one per RDN, and so print last.
    rdns: list[list[str]] = [[_unnamed(oid, value, tag)] for oid, value, tag in attributes if oid not in _SHORT_NAMES]
    for oid in _CANONICAL:
        if oid in values:
            rdns.append([f"{_SHORT_NAMES[oid]}={_escape(v)}" for v in values[oid]])
    for oid in (_CN, _SERIAL):
        if values.get(oid) and values[oid][-1]:
            rdns.append([f"{_SHORT_NAMES[oid]}={_escape(values[oid][-1])}"])
    return ",".join("+".join(rdn) for rdn in reversed(rdns))


def _escape(value: str) -> str:
    out = []
    last = len(value) - 1
    for i, char in enumerate(value):
        if char in ',+"\\<>;' or (char == " " and i in (0, last)) or (char == "#" and i == 0):
            out.append("\\")
        out.append(char)
    return "".join(out)


_PRINTABLE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 '()+,-./:=?")


def _unnamed(oid: str, value: Any, tag: int | None) -> str:
    """`1.2.3=#<hex DER>`: Go re-encodes a string as PrintableString when it can, else UTF8String."""
    if isinstance(value, str):
        body = value.encode("utf-8", "surrogatepass")
        tag = 0x13 if all(b in _PRINTABLE for b in body) else 0x0C
    else:
        body = bytes(value)
        tag = tag if tag is not None else 0x04
    return f"{oid}=#{_der(tag, body).hex()}"


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes((tag, size)) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + body
