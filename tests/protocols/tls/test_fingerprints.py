"""JA3 / JA4 against published vectors, and GREASE handling."""

from __future__ import annotations

import pytest

from agent.protocols.tls.fingerprints import ja3, ja3_string, ja3s, ja3s_string, ja4
from agent.protocols.tls.parser import parse_client_hello, parse_server_hello
from tests.protocols.tls import builders as b

# The worked example of the JA4 specification (technical_details/JA4.md).
SPEC_CIPHERS = (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014, 0x009C,
                0x009D, 0x002F, 0x0035)
SPEC_SIGNATURES = (0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)


def spec_extensions(signatures: tuple[int, ...] = SPEC_SIGNATURES, alpn: bytes | None = None,
                    grease: bool = False) -> list[bytes]:
    alpn_ext = b.alpn("h2") if alpn is None else b.ext(16, b.vec16(b.vec8(alpn)))
    exts = [b.ext(0x001B, b"\x02\x00\x02"), b.sni("example.com"), b.ext(0x0033, b.vec16(b"")), alpn_ext,
            b.ext(0x4469, b"\x00\x03\x02h2"), b.ext(0x0017), b.ext(0x002D, b"\x01\x01"),
            b.signature_algorithms(*signatures) if signatures else b.ext(0x000D, b.vec16(b"")),
            b.status_request(), b.session_ticket(), b.ext(0x0012), b.client_versions(0x0304, 0x0303),
            b.ext(0xFF01, b"\x00"), b.point_formats(0), b.groups(29, 23, 24), b.ext(0x0015, b"\x00" * 10)]
    if grease:
        exts = [b.ext(0x5A5A), *exts[:5], b.ext(0xCACA, b"\x00"), *exts[5:]]
    return exts


def hello(**kwargs: object) -> bytes:
    """The ClientHello body (after the 4-byte handshake header)."""
    return b.client_hello(**kwargs)[4:]  # type: ignore[arg-type]


def test_ja4_specification_example() -> None:
    parsed = parse_client_hello(hello(ciphers=SPEC_CIPHERS, extensions=spec_extensions()))
    assert ja4(parsed) == "t13d1516h2_8daaf6152771_e5627efa2ab1"


def test_ja4_without_signature_algorithms_has_no_underscore_part() -> None:
    parsed = parse_client_hello(hello(ciphers=SPEC_CIPHERS, extensions=spec_extensions(signatures=())))
    assert ja4(parsed).endswith("_6d807ffa2a79")


def test_ja4_ignores_grease() -> None:
    greasy = parse_client_hello(hello(ciphers=(0x0A0A, *SPEC_CIPHERS), extensions=spec_extensions(grease=True)))
    assert ja4(greasy) == "t13d1516h2_8daaf6152771_e5627efa2ab1"


@pytest.mark.parametrize(("alpn", "expected"), [
    (b"\xab", "ab"), (b"\xab\xcd", "ad"), (b"\x30\xab", "3b"), (b"\x30\x31\xab\xcd", "3d"),
    (b"\x30\xab\xcd\x31", "01"), (b"http/1.1", "h1"), (b"h", "hh"),
])
def test_ja4_alpn_characters(alpn: bytes, expected: str) -> None:
    parsed = parse_client_hello(hello(ciphers=SPEC_CIPHERS, extensions=spec_extensions(alpn=alpn)))
    assert ja4(parsed)[8:10] == expected


def test_ja4_no_ciphers_no_extensions_no_alpn() -> None:
    parsed = parse_client_hello(hello(version=0x0301, ciphers=(), extensions=None))
    assert ja4(parsed) == "t10i000000_000000000000_000000000000"


def test_ja3_string_and_grease() -> None:
    exts = [b.sni("a.test"), b.groups(0x1A1A, 29, 23), b.point_formats(0, 1)]
    plain = parse_client_hello(hello(ciphers=(0xC02F, 0x002F), extensions=exts))
    assert ja3_string(plain) == "771,49199-47,0-10-11,29-23,0-1"
    greasy = parse_client_hello(hello(ciphers=(0x7A7A, 0xC02F, 0x002F),
                                      extensions=[b.ext(0x2A2A), *exts, b.ext(0xEAEA, b"\x00")]))
    assert ja3(greasy) == ja3(plain)


def test_ja3_without_extensions() -> None:
    parsed = parse_client_hello(hello(ciphers=(0x0035,), extensions=None))
    assert ja3_string(parsed) == "771,53,,,"


# The two worked examples of the Salesforce JA3 README: string and hash.
@pytest.mark.parametrize(("version", "ciphers", "extensions", "text", "digest"), [
    (0x0301, (47, 53, 5, 10, 49161, 49162, 49171, 49172, 50, 56, 19, 4),
     [b.sni("a.test"), b.groups(23, 24, 25), b.point_formats(0)],
     "769,47-53-5-10-49161-49162-49171-49172-50-56-19-4,0-10-11,23-24-25,0", "ada70206e40642a3e4461f35503241d5"),
    (0x0301, (4, 5, 10, 9, 100, 98, 3, 6, 19, 18, 99), None,
     "769,4-5-10-9-100-98-3-6-19-18-99,,,", "de350869b8c85de67a350c8d186f11e6"),
])
def test_ja3_salesforce_readme_examples(version: int, ciphers: tuple[int, ...], extensions: list[bytes] | None,
                                        text: str, digest: str) -> None:
    parsed = parse_client_hello(hello(version=version, ciphers=ciphers, extensions=extensions))
    assert (ja3_string(parsed), ja3(parsed)) == (text, digest)


def server_hello_body(**kwargs: object) -> bytes:
    return b.server_hello(**kwargs)[4:]  # type: ignore[arg-type]


# Standard JA3S (`version,cipher,extensions`): Salesforce's example, then as tshark 4.0 prints it for the
# ServerHellos of tls-sample2.pcap, tls-sample1.pcap and tls-version-13.pcap (tls.handshake.ja3s_full / ja3s).
@pytest.mark.parametrize(("version", "cipher", "extensions", "text", "digest"), [
    # The worked example of the Salesforce JA3 README's JA3S section.
    (0x0301, 47, [b.ext(0xFF01, b"\x00"), b.ext(0), b.point_formats(0), b.ext(35), b.ext(5),
                  b.ext(16, b.vec16(b.vec8(b"h2")))],
     "769,47,65281-0-11-35-5-16", "836ce314215654b5b1f85f97c73e506f"),
    (0x0303, 49199, [b.ext(0xFF01, b"\x00"), b.ext(0), b.point_formats(0), b.ext(16, b.vec16(b.vec8(b"h2")))],
     "771,49199,65281-0-11-16", "ae53107a2e47ea20c72ac44821a728bf"),
    (0x0303, 49199, [b.ext(0xFF01, b"\x00"), b.ext(0), b.point_formats(0), b.ext(35), b.ext(5), b.ext(23),
                     b.ext(16, b.vec16(b.vec8(b"h2")))],
     "771,49199,65281-0-11-35-5-23-16", "860fcf58fd757e26aa8911e5eaff6b53"),
    (0x0303, 4865, [b.ext(41, b"\x00\x00"), b.key_share_server(29), b.server_version(0x0304)],
     "771,4865,41-51-43", "2b0648ab686ee45e0e7c35fcfb0eea7e"),
])
def test_ja3s_standard_known_vectors(version: int, cipher: int, extensions: list[bytes], text: str,
                                     digest: str) -> None:
    parsed = parse_server_hello(server_hello_body(version=version, cipher=cipher, extensions=extensions))
    assert (ja3s_string(parsed), ja3s(parsed)) == (text, digest)


def test_ja3s_without_extensions_keeps_its_empty_extensions_field() -> None:
    parsed = parse_server_hello(server_hello_body(version=0x0301, cipher=47, extensions=None))
    assert ja3s_string(parsed) == "769,47,"
    assert ja3s_string(parsed, "packetbeat") == "769,,,,"


def test_ja3s_packetbeat_variant() -> None:
    parsed = parse_server_hello(server_hello_body(cipher=49199, extensions=[b.ext(0xFF01, b"\x00"),
                                                                             b.point_formats(0, 1, 2)]))
    assert ja3s_string(parsed, "packetbeat") == "771,,65281-11,,0-1-2"
    assert ja3s_string(parsed) == "771,49199,65281-11"
