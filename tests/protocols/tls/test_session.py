"""TLS sessions fed literal handshake bytes: whole, byte by byte and split at random points."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent import metrics
from agent.config.typed import ConfigError
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.tls.plugin import TlsSession
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, conn_info, protocol_config, run_stream
from tests.protocols.tls import builders as b

SNI = "www.example.test"
CLIENT_EXTENSIONS = [b.sni(SNI), b.ext(0xFF01, b"\x00"), b.groups(29, 23, 24), b.point_formats(0),
                     b.session_ticket(), b.alpn("h2", "http/1.1"), b.status_request(),
                     b.signature_algorithms(0x0403, 0x0804, 0x0401), b.ext(23)]
CLIENT_CIPHERS = (0xC02B, 0xC02F, 0xCCA9, 0x009C, 0x002F)


def tls_of(txn: Transaction) -> dict[str, Any]:
    return txn.fields["tls"]


def run(steps: list[Step], **options: Any) -> list[Transaction]:
    return assert_same_three_ways("tls", steps, server_port=443, options=options)


@pytest.fixture(scope="module")
def chain() -> tuple[x509.Certificate, x509.Certificate]:
    return b.make_chain()


def full_handshake(leaf: x509.Certificate, ca: x509.Certificate, ocsp: bytes | None = None) -> list[Step]:
    """A TLS 1.2 ECDHE handshake with certificates, then application data both ways and FIN."""
    server_flight = (b.server_hello(cipher=0xC02F, extensions=[b.ext(0xFF01, b"\x00"), b.point_formats(0, 1, 2),
                                                              b.alpn("h2"), b.ext(5)])
                     + b.certificate(b.der(leaf), b.der(ca))
                     + (b.certificate_status(ocsp) if ocsp else b"")
                     + b.server_key_exchange_ecdhe(23) + b.server_hello_done())
    return [
        Step(C2S, b.record(b.HANDSHAKE, b.client_hello(ciphers=CLIENT_CIPHERS, extensions=CLIENT_EXTENSIONS),
                           version=0x0301), ts_ns=1_000_000_000),
        Step(S2C, b.records(b.HANDSHAKE, server_flight, 1200), ts_ns=1_050_000_000),
        Step(C2S, b.record(b.HANDSHAKE, b.client_key_exchange()) + b.CHANGE_CIPHER_SPEC
             + b.record(b.HANDSHAKE, b"\x99" * 40), ts_ns=1_100_000_000),
        Step(S2C, b.CHANGE_CIPHER_SPEC + b.record(b.HANDSHAKE, b"\x98" * 40), ts_ns=1_150_000_000),
        Step(C2S, b.app_data(300), ts_ns=1_200_000_000),
        Step(S2C, b.app_data(900) + b.alert(1, 0), ts_ns=1_250_000_000, fin=True),
    ]


def test_tls12_handshake_fields(chain: tuple[x509.Certificate, x509.Certificate]) -> None:
    leaf, ca = chain
    [txn] = run(full_handshake(leaf, ca))
    tls = tls_of(txn)
    assert txn.status == "OK"
    assert (txn.ts_ns, txn.end_ns) == (1_000_000_000, 1_150_000_000)
    assert txn.client_bytes is None and txn.server_bytes is None
    assert txn.domain == SNI
    assert tls["version"] == "1.2" and tls["version_protocol"] == "tls"
    assert tls["cipher"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert tls["established"] is True and tls["resumed"] is False
    assert tls["next_protocol"] == "h2"
    assert tls["client"]["server_name"] == SNI
    assert tls["client"]["supported_ciphers"] == [
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_RSA_WITH_AES_128_CBC_SHA"]
    ja3_text = "771,49195-49199-52393-156-47,0-65281-10-11-35-16-5-13-23,29-23-24,0"
    assert tls["client"]["ja3"] == hashlib.md5(ja3_text.encode()).hexdigest()
    # The standard JA3S by default; Packetbeat's variant (the JA3 recipe over the ServerHello) on request.
    assert tls["server"]["ja3s"] == hashlib.md5(b"771,49199,65281-11-16-5").hexdigest()
    [packetbeat] = run(full_handshake(leaf, ca), ja3s="packetbeat")
    assert tls_of(packetbeat)["server"]["ja3s"] == hashlib.md5(b"771,,65281-11-16-5,,0-1-2").hexdigest()
    server = tls["server"]
    assert server["hash"] == {"sha1": hashlib.sha1(b.der(leaf)).hexdigest().upper()}
    # Go's order: the named attributes most specific first, attributes it has no name for last, as DER hex.
    assert server["subject"] == ("CN=www.example.test,O=Acme\\, Inc.,L=Los Angeles,ST=California,C=US,"
                                 "1.2.840.113549.1.9.1=#0c106f7073406578616d706c652e74657374")
    assert server["issuer"] == "CN=Example Test CA,OU=Test Unit,O=Example CA Org,C=FR"
    assert server["not_before"] == "2024-01-02T03:04:05.000Z" and server["not_after"] == "2034-01-02T03:04:05.000Z"
    assert server["x509"] == {
        "alternative_names": ["www.example.test", "example.test", "ops@example.test", "192.0.2.7"],
        "issuer": {"common_name": "Example Test CA", "country": "FR", "organization": "Example CA Org",
                   "organizational_unit": "Test Unit", "distinguished_name": server["issuer"]},
        "subject": {"common_name": "www.example.test", "country": "US", "organization": "Acme, Inc.",
                    "locality": "Los Angeles", "state_or_province": "California",
                    "distinguished_name": server["subject"]},
        "not_before": "2024-01-02T03:04:05.000Z", "not_after": "2034-01-02T03:04:05.000Z",
        "public_key_algorithm": "ECDSA", "public_key_size": 256, "serial_number": "F00DCAFE",
        "signature_algorithm": "SHA256-RSA", "version_number": 3,
    }
    detailed = tls["detailed"]
    [ca_fields] = detailed["server_certificate_chain"]
    assert ca_fields["subject"]["common_name"] == "Example Test CA"
    assert (ca_fields["public_key_algorithm"], ca_fields["public_key_size"]) == ("RSA", 2048)
    assert ca_fields["serial_number"] == "ABC"
    assert "alternative_names" not in ca_fields
    assert detailed["version"] == "TLS 1.2"
    assert detailed["client_certificate_requested"] is False
    assert "resumption_method" not in detailed and "alerts" not in detailed
    hello = detailed["client_hello"]
    assert hello["version"] == "3.3" and hello["random"] == bytes(range(32)).hex()
    assert hello["supported_compression_methods"] == ["NULL"] and "session_id" not in hello
    assert hello["extensions"] == {
        "server_name_indication": [SNI], "supported_groups": ["x25519", "secp256r1", "secp384r1"],
        "ec_points_formats": ["uncompressed"], "session_ticket": "",
        "application_layer_protocol_negotiation": ["h2", "http/1.1"],
        "status_request": {"type": "ocsp", "responder_id_list_length": 0, "request_extensions": 0},
        "signature_algorithms": ["ecdsa_secp256r1_sha256", "rsa_pss_sha256", "rsa_pkcs1_sha256"],
        "_unparsed_": ["renegotiation_info", "23"],
    }
    assert detailed["server_hello"] == {
        "version": "3.3", "random": bytes(range(100, 132)).hex(), "selected_compression_method": "NULL",
        "extensions": {"ec_points_formats": ["uncompressed", "ansiX962_compressed_prime", "ansiX962_compressed_char2"],
                       "application_layer_protocol_negotiation": ["h2"], "status_request": {"response": True},
                       "_unparsed_": ["renegotiation_info"]},
    }
    assert "curve" not in tls and "ja4" not in tls["client"]


def test_handshake_fragmented_across_records_gives_the_same_event(chain: tuple[Any, Any]) -> None:
    leaf, ca = chain
    steps = full_handshake(leaf, ca)
    hello = b.client_hello(ciphers=CLIENT_CIPHERS, extensions=CLIENT_EXTENSIONS)
    fragmented = [Step(C2S, b.records(b.HANDSHAKE, hello, 37, version=0x0301), ts_ns=1_000_000_000), *steps[1:]]
    [whole] = run(steps)
    [pieces] = run(fragmented)
    assert tls_of(pieces) == tls_of(whole)


def test_interleaved_alert_and_application_data_records() -> None:
    hello = b.client_hello(extensions=[b.sni("example.org")])
    half = len(hello) // 2
    steps = [
        Step(C2S, b.record(b.HANDSHAKE, hello[:half]), ts_ns=10),
        Step(C2S, b.alert(0xFF, 0xFF) + b.alert(1, 1), ts_ns=11),
        Step(C2S, b.app_data(8), ts_ns=12),
        Step(C2S, b.record(b.HANDSHAKE, hello[half:]), ts_ns=13, fin=True),
    ]
    [txn] = run(steps)
    detailed = tls_of(txn)["detailed"]
    assert detailed["client_hello"]["extensions"]["server_name_indication"] == ["example.org"]
    assert detailed["alerts"] == [
        {"severity": "(unknown:0xff)", "code": 255, "type": "(unknown:0xff)", "source": "client"},
        {"severity": "warning", "code": 1, "type": "(unknown:0x01)", "source": "client"},
    ]
    assert detailed["alert_types"] == ["(unknown:0xff)", "(unknown:0x01)"]
    assert txn.status == "Error" and tls_of(txn)["established"] is False
    assert txn.end_ns is None


def tls13_steps(ccs: bool, psk: bool = False, session_id: bytes = bytes(range(32))) -> list[Step]:
    # pre_shared_key: the client's offer (identities, binders) comes last; the server selects identity 0.
    client_psk = [b.ext(41, b.vec16(b.vec16(b"\x05" * 40) + b"\x00\x00\x00\x01") + b.vec16(b.vec8(b"\x06" * 32)))]
    client = b.client_hello(session_id=session_id, ciphers=(0x1301, 0x1302, 0xC02F), extensions=[
        b.sni("tls13.example"), b.groups(0x0A0A, 29, 23), b.client_versions(0x3A3A, 0x0304, 0x0303),
        b.ext(51, b.vec16(b.u16(29) + b.vec16(b"\x01" * 32))), b.signature_algorithms(0x0804, 0x0403),
        *(client_psk if psk else [])])
    server = b.server_hello(session_id=session_id, cipher=0x1301,
                            extensions=[b.key_share_server(29), b.server_version(0x0304),
                                        *([b.ext(41, b.u16(0))] if psk else [])])
    ccs_record = b.CHANGE_CIPHER_SPEC if ccs else b""
    return [
        Step(C2S, b.record(b.HANDSHAKE, client, version=0x0301), ts_ns=100),
        Step(S2C, b.record(b.HANDSHAKE, server) + ccs_record + b.app_data(600) + b.app_data(80), ts_ns=200),
        Step(C2S, ccs_record + b.app_data(60), ts_ns=300),
        Step(C2S, b.app_data(200), ts_ns=400, fin=True),
    ]


@pytest.mark.parametrize("ccs", [True, False], ids=["middlebox-compat-ccs", "no-ccs"])
def test_tls13_negotiated_through_supported_versions(ccs: bool) -> None:
    [txn] = run(tls13_steps(ccs))
    tls = tls_of(txn)
    assert (tls["version"], tls["version_protocol"], tls["detailed"]["version"]) == ("1.3", "tls", "TLS 1.3")
    assert tls["cipher"] == "TLS_AES_128_GCM_SHA256"
    assert tls["established"] is True and txn.status == "OK"
    assert txn.end_ns == 300  # the client's first encrypted record
    # The echoed legacy session id of a full TLS 1.3 handshake is not a resumption.
    assert tls["resumed"] is False and "resumption_method" not in tls["detailed"]
    assert tls["detailed"]["server_hello"]["extensions"]["supported_versions"] == "TLS 1.3"
    assert tls["detailed"]["client_hello"]["extensions"]["supported_versions"] == ["TLS 1.3", "TLS 1.2"]
    assert tls["detailed"]["server_hello"]["extensions"]["_unparsed_"] == ["51"]


def test_tls13_resumed_only_when_the_server_hello_selects_a_psk() -> None:
    [txn] = run(tls13_steps(ccs=True, psk=True))
    tls = tls_of(txn)
    assert tls["version"] == "1.3" and tls["established"] is True
    # The method keeps Packetbeat's naming: the legacy session id was echoed.
    assert tls["resumed"] is True and tls["detailed"]["resumption_method"] == "id"
    [txn] = run(tls13_steps(ccs=True, psk=True, session_id=b""))
    assert tls_of(txn)["resumed"] is True and tls_of(txn)["detailed"]["resumption_method"] == "ticket"


def test_tls13_psk_offered_but_not_selected_is_a_full_handshake() -> None:
    steps = tls13_steps(ccs=False, psk=True)
    full_server = b.server_hello(session_id=bytes(range(32)), cipher=0x1301,
                                 extensions=[b.key_share_server(29), b.server_version(0x0304)])
    steps[1] = Step(S2C, b.record(b.HANDSHAKE, full_server) + b.app_data(600), ts_ns=200)
    [txn] = run(steps)
    assert tls_of(txn)["resumed"] is False


def test_legacy_version_negotiation() -> None:
    steps = [Step(C2S, b.record(b.HANDSHAKE, b.client_hello()), ts_ns=1),
             Step(S2C, b.record(b.HANDSHAKE, b.server_hello()) + b.CHANGE_CIPHER_SPEC, ts_ns=2),
             Step(C2S, b.CHANGE_CIPHER_SPEC, ts_ns=3)]
    [txn] = run(steps)
    tls = tls_of(txn)
    assert (tls["version"], tls["version_protocol"], tls["detailed"]["version"]) == ("1.2", "tls", "TLS 1.2")


def test_ssl3_and_unknown_versions() -> None:
    [ssl3] = run([Step(C2S, b.record(b.HANDSHAKE, b.client_hello(version=0x0300)), ts_ns=1, fin=True)])
    assert (tls_of(ssl3)["version_protocol"], tls_of(ssl3)["version"]) == ("ssl", "3.0")
    assert tls_of(ssl3)["detailed"]["version"] == "SSL 3.0"
    hello = b.server_hello(extensions=[b.server_version(0x7F1C)])
    [draft] = run([Step(S2C, b.record(b.HANDSHAKE, hello), ts_ns=1, fin=True)])
    assert (tls_of(draft)["version_protocol"], tls_of(draft)["version"]) == ("unknown", "127.28")
    assert tls_of(draft)["detailed"]["version"] == "(raw 127.28)"


def drive(steps: list[Step], **options: Any) -> tuple[TlsSession, list[Transaction], list[int]]:
    """Feed steps one by one; returns the session, its events and the step index each event came at."""
    out: list[Transaction] = []
    session = TlsSession(SessionContext("tls", protocol_config("tls", **options), conn_info(443), out.append,
                                        metrics.register("test.tls")))
    at: list[int] = []
    for i, step in enumerate(steps):
        before = len(out)
        if step.gap:
            session.gap(step.direction, step.gap, step.ts_ns)
        elif step.data:
            session.feed(step.direction, step.data, step.ts_ns)
        if step.fin:
            session.fin(step.direction, step.ts_ns)
        at += [i] * (len(out) - before)
    return session, out, at


def test_fatal_alert_publishes_at_once() -> None:
    steps = [Step(C2S, b.record(b.HANDSHAKE, b.client_hello(extensions=[b.sni("x.test")])), ts_ns=5),
             Step(S2C, b.alert(2, 40), ts_ns=6),
             Step(S2C, b"", ts_ns=7, fin=True)]
    _, out, at = drive(steps)
    assert at == [1]
    [txn] = out
    assert txn.status == "Error"
    assert tls_of(txn)["detailed"]["alerts"] == [
        {"severity": "fatal", "code": 40, "type": "handshake_failure", "source": "server"}]
    assert tls_of(txn)["detailed"]["alert_types"] == ["handshake_failure"]
    assert run(steps)[0].fields == txn.fields


def test_lone_alert_then_fin() -> None:
    [txn] = run([Step(C2S, bytes.fromhex("1503010002022d"), ts_ns=1, fin=True)])
    tls = tls_of(txn)
    assert tls["detailed"]["alerts"] == [
        {"severity": "fatal", "code": 45, "type": "certificate_expired", "source": "client"}]
    # Without a hello there is no version to report (Packetbeat would print "0.0"/"unknown").
    assert "version" not in tls and "version" not in tls["detailed"]


def test_alert_of_wrong_length_is_ignored() -> None:
    assert run([Step(C2S, bytes.fromhex("1503010003010203"), ts_ns=1, fin=True)]) == []


def test_not_tls_gives_no_event() -> None:
    counters = metrics.register("test.tls")
    before = counters["not_tls"]
    steps = [Step(C2S, b"GET / HTTP/1.1\r\nHost: example.net\r\n\r\n", ts_ns=1),
             Step(S2C, b"HTTP/1.1 400 Bad Request\r\n\r\n", ts_ns=2, fin=True)]
    assert run(steps) == []
    assert counters["not_tls"] > before


def test_sslv2_compatible_hello_is_not_parsed() -> None:
    assert run([Step(C2S, bytes.fromhex("802e0103010015000000100100800300800700c0"), ts_ns=1, fin=True)]) == []


def ocsp_response(chain: tuple[x509.Certificate, x509.Certificate], status: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import ocsp

    leaf, ca = chain
    if status != "successful":
        return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(
            serialization.Encoding.DER)
    key = ec.generate_private_key(ec.SECP256R1())
    responder = b.make_certificate(b.CA_NAME, b.CA_NAME, key, key, serial=7)
    import datetime
    now = datetime.datetime(2024, 6, 1, tzinfo=datetime.UTC)
    builder = (ocsp.OCSPResponseBuilder()
               .add_response(cert=leaf, issuer=ca, algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.GOOD,
                             this_update=now, next_update=now, revocation_time=None, revocation_reason=None)
               .responder_id(ocsp.OCSPResponderEncoding.HASH, responder))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("status", ["successful", "tryLater"])
def test_ocsp_stapled_status(chain: tuple[x509.Certificate, x509.Certificate], status: str) -> None:
    leaf, ca = chain
    [txn] = run(full_handshake(leaf, ca, ocsp=ocsp_response(chain, status)))
    assert tls_of(txn)["detailed"]["ocsp_response"] == status


@pytest.mark.parametrize("message", [
    "0b000000",  # empty
    "0b000003000000",  # no certificates
    "0b000003000fff",  # certificates length out of bounds
    "0b000006000003000000",  # certificate of size zero
    "0b000007000004000fff33",  # certificate size out of bounds
    "0b00000700000400000133",  # not a certificate
])
def test_bad_certificate_message_is_dropped(message: str) -> None:
    flight = b.server_hello() + bytes.fromhex(message) + b.server_hello_done()
    [txn] = run([Step(S2C, b.record(b.HANDSHAKE, flight), ts_ns=1, fin=True)])
    tls = tls_of(txn)
    assert tls["cipher"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert "x509" not in tls["server"] and "hash" not in tls["server"]
    assert "server_certificate_chain" not in tls["detailed"]


def test_grease_is_ignored_everywhere() -> None:
    plain = b.client_hello(ciphers=(0x1301, 0xC02F), extensions=[b.sni("g.test"), b.groups(29, 23),
                                                               b.client_versions(0x0304, 0x0303)])
    greasy = b.client_hello(ciphers=(0x2A2A, 0x1301, 0xC02F), extensions=[
        b.ext(0x0A0A), b.sni("g.test"), b.groups(0xBABA, 29, 23), b.client_versions(0x1A1A, 0x0304, 0x0303),
        b.ext(0xFAFA, b"\x00")])
    events = [tls_of(run([Step(C2S, b.record(b.HANDSHAKE, h), ts_ns=1, fin=True)], include_ja4=True)[0])
              for h in (plain, greasy)]
    assert events[0]["client"] == events[1]["client"]
    assert events[1]["client"]["supported_ciphers"] == ["TLS_AES_128_GCM_SHA256",
                                                        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]
    assert events[0]["detailed"]["client_hello"]["extensions"] == events[1]["detailed"]["client_hello"]["extensions"]


# A Chrome ClientHello (from Packetbeat's unit tests) and its known JA3.
CHROME_HELLO = bytes.fromhex(
    "16030100c2010000be03033367dfae0d46ec0651e49cca2ae47317e8989df710ee7570a88b9a7d5d56b3af00001c3a3ac02bc02fc02c"
    "c030cca9cca8c013c014009c009d002f0035000a01000079dada0000ff0100010000000010000e00000b6578616d706c652e6f7267"
    "0017000000230000000d00140012040308040401050308050501080606010201000500050100000000001200000010000e000c0268"
    "3208687474702f312e3175500000000b00020100000a000a00086a6a001d00170018aaaa000100")


def test_ja3_known_vector() -> None:
    [txn] = run([Step(C2S, CHROME_HELLO, ts_ns=1, gap=0, fin=True)])
    tls = tls_of(txn)
    assert tls["client"]["ja3"] == "94c485bca29d5392be53f2b8cf7f4304"
    assert tls["detailed"]["client_hello"]["extensions"]["_unparsed_"] == ["renegotiation_info", "23", "18", "30032"]
    assert txn.domain == "example.org"


def test_session_ticket_resumption() -> None:
    steps = [
        Step(C2S, b.record(b.HANDSHAKE, b.client_hello(session_id=b"\x01" * 32,
                                                       extensions=[b.session_ticket(b"\x07" * 96)])), ts_ns=1),
        Step(S2C, b.record(b.HANDSHAKE, b.server_hello(session_id=b"\x01" * 32, extensions=[b.session_ticket()]))
             + b.CHANGE_CIPHER_SPEC, ts_ns=2),
        Step(C2S, b.CHANGE_CIPHER_SPEC, ts_ns=3),
    ]
    [txn] = run(steps)
    tls = tls_of(txn)
    assert tls["resumed"] is True and tls["detailed"]["resumption_method"] == "ticket"
    assert tls["detailed"]["client_hello"]["extensions"]["session_ticket"] == "(96 bytes)"


def test_client_certificate(chain: tuple[x509.Certificate, x509.Certificate]) -> None:
    leaf, ca = chain
    steps = [
        Step(C2S, b.record(b.HANDSHAKE, b.client_hello()), ts_ns=1),
        Step(S2C, b.record(b.HANDSHAKE, b.server_hello() + b.certificate(b.der(ca)) + b.certificate_request()
                           + b.server_hello_done()), ts_ns=2),
        Step(C2S, b.record(b.HANDSHAKE, b.certificate(b.der(leaf)) + b.client_key_exchange())
             + b.CHANGE_CIPHER_SPEC, ts_ns=3),
        Step(S2C, b.CHANGE_CIPHER_SPEC, ts_ns=4),
    ]
    [txn] = run(steps)
    tls = tls_of(txn)
    assert tls["detailed"]["client_certificate_requested"] is True
    assert tls["client"]["x509"]["subject"]["common_name"] == "www.example.test"
    assert tls["client"]["hash"]["sha1"] == hashlib.sha1(b.der(leaf)).hexdigest().upper()
    assert tls["server"]["subject"] == "CN=Example Test CA,OU=Test Unit,O=Example CA Org,C=FR"
    assert "client_certificate_chain" not in tls["detailed"]


def test_certificate_options(chain: tuple[x509.Certificate, x509.Certificate]) -> None:
    leaf, ca = chain
    steps = full_handshake(leaf, ca)
    [raw] = run(steps, include_raw_certificates=True, fingerprints=["MD5", "sha-256", "sha1"])
    server = tls_of(raw)["server"]
    assert server["certificate_chain"] == [c.public_bytes(serialization.Encoding.PEM).decode() for c in chain]
    assert server["hash"] == {"md5": hashlib.md5(b.der(leaf)).hexdigest().upper(),
                              "sha256": hashlib.sha256(b.der(leaf)).hexdigest().upper(),
                              "sha1": hashlib.sha1(b.der(leaf)).hexdigest().upper()}

    [no_certs] = run(steps, send_certificates=False)
    tls = tls_of(no_certs)
    assert "x509" not in tls["server"] and "server_certificate_chain" not in tls["detailed"]
    assert tls["server"]["subject"].startswith("CN=www.example.test,")
    assert "certificate_chain" not in tls["server"]

    [not_detailed] = run(steps, include_detailed_fields=False, fingerprints=[])
    tls = tls_of(not_detailed)
    assert "detailed" not in tls and "x509" not in tls["server"] and "hash" not in tls["server"]
    assert tls["server"]["issuer"] == "CN=Example Test CA,OU=Test Unit,O=Example CA Org,C=FR"


def test_ja4_and_curve_options(chain: tuple[x509.Certificate, x509.Certificate]) -> None:
    leaf, ca = chain
    [txn] = run(full_handshake(leaf, ca), include_ja4=True, include_curve=True)
    tls = tls_of(txn)
    assert tls["curve"] == "secp256r1"
    assert tls["client"]["ja4"].startswith("t12d0509h2_")
    [tls13] = run(tls13_steps(ccs=True), include_curve=True)
    assert tls_of(tls13)["curve"] == "x25519"


def test_unknown_fingerprint_algorithm_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="fingerprint algorithm 'sha512' not found"):
        protocol_config("tls", fingerprints=["sha1", "sha512"])


def test_oversized_handshake_message_is_skipped_not_buffered() -> None:
    counters = metrics.register("test.tls")
    before = counters["oversized_handshake_messages"]
    # A ServerKeyExchange claiming 70000 bytes (over the 64 KiB limit), streamed in records, then CCS.
    body = b.handshake(12, b"\x00" * 70_000)
    steps = [Step(S2C, b.record(b.HANDSHAKE, b.server_hello()), ts_ns=1)]
    steps += [Step(S2C, r, ts_ns=2) for r in [b.record(b.HANDSHAKE, body[i:i + 16_000])
                                              for i in range(0, len(body), 16_000)]]
    steps += [Step(S2C, b.CHANGE_CIPHER_SPEC, ts_ns=3), Step(C2S, b.record(b.HANDSHAKE, b.client_hello()), ts_ns=4),
              Step(C2S, b.CHANGE_CIPHER_SPEC, ts_ns=5)]
    session, out, _ = drive(steps)
    assert counters["oversized_handshake_messages"] == before + 1
    [txn] = out
    assert tls_of(txn)["established"] is True
    # A 16 MB Certificate announced: buffers stay at one record whatever arrives.
    huge = b.u8(11) + b.u24(0xFFFFFF) + b"\x00" * 16_000
    session, out, _ = drive([Step(S2C, b.record(b.HANDSHAKE, b.server_hello()), ts_ns=1)]
                            + [Step(S2C, b.record(b.HANDSHAKE, huge if i == 0 else b"\x01" * 16_380), ts_ns=2)
                               for i in range(20)])
    assert all(d.parser.buffered < 20_000 for d in session.dirs)
    assert out == []


def test_gap_during_handshake_publishes_what_was_seen() -> None:
    steps = [Step(C2S, b.record(b.HANDSHAKE, b.client_hello(extensions=[b.sni("gap.test")])), ts_ns=1),
             Step(S2C, b"", gap=1400, ts_ns=2),
             Step(S2C, b.CHANGE_CIPHER_SPEC, ts_ns=3), Step(C2S, b.CHANGE_CIPHER_SPEC, ts_ns=4, fin=True)]
    _, out, at = drive(steps)
    assert at == [1]
    [txn] = out
    assert txn.status == "Error" and txn.domain == "gap.test"
    assert run(steps)[0].fields == txn.fields


def test_gap_in_encrypted_direction_is_ignored() -> None:
    steps = [Step(C2S, b.record(b.HANDSHAKE, b.client_hello()), ts_ns=1),
             Step(S2C, b.record(b.HANDSHAKE, b.server_hello()), ts_ns=2),
             Step(C2S, b.CHANGE_CIPHER_SPEC, ts_ns=3),
             Step(C2S, b"", gap=5000, ts_ns=4),
             Step(S2C, b.CHANGE_CIPHER_SPEC, ts_ns=5)]
    [txn] = run(steps)
    assert txn.status == "OK" and txn.end_ns == 5


def test_unfinished_handshake_is_published_on_expiry() -> None:
    [txn] = run([Step(C2S, b.record(b.HANDSHAKE, b.client_hello()), ts_ns=7)])
    assert txn.status == "Error" and txn.ts_ns == 7 and txn.end_ns is None
    assert tls_of(txn)["established"] is False


def test_roles_follow_the_hellos_when_the_transport_guessed_wrong() -> None:
    conn = conn_info(443)
    steps = [Step(S2C, b.record(b.HANDSHAKE, b.client_hello(extensions=[b.sni("swap.test")])), ts_ns=1),
             Step(C2S, b.record(b.HANDSHAKE, b.server_hello()) + b.CHANGE_CIPHER_SPEC, ts_ns=2),
             Step(S2C, b.CHANGE_CIPHER_SPEC, ts_ns=3)]
    [txn] = run_stream("tls", steps, conn=conn)
    assert txn.conn.client == conn.server and txn.conn.server == conn.client
    assert txn.status == "OK" and tls_of(txn)["client"]["server_name"] == "swap.test"


def test_nothing_after_the_event_is_parsed(chain: tuple[Any, Any]) -> None:
    leaf, ca = chain
    steps = full_handshake(leaf, ca)
    steps.append(Step(C2S, b"not even TLS" * 100, ts_ns=2_000_000_000, fin=True))
    assert len(run(steps)) == 1


# -- resynchronisation: another protocol's cleartext before the handshake (STARTTLS on a TLS port) ---------------

LDAP_STARTTLS_REQUEST = bytes.fromhex("301d02010177188016312e332e362e312e342e312e313436362e3230303337")
LDAP_STARTTLS_RESPONSE = bytes.fromhex("300c02010178070a010004000400")


def starttls_steps(client_cleartext: bytes, server_cleartext: bytes) -> list[Step]:
    hello = b.record(b.HANDSHAKE, b.client_hello(ciphers=CLIENT_CIPHERS, extensions=CLIENT_EXTENSIONS))
    flight = b.record(b.HANDSHAKE, b.server_hello(cipher=0xC02F) + b.server_hello_done())
    return [
        Step(C2S, client_cleartext, ts_ns=1_000_000_000),
        Step(S2C, server_cleartext, ts_ns=1_100_000_000),
        Step(C2S, hello, ts_ns=2_000_000_000),
        Step(S2C, flight, ts_ns=2_100_000_000),
        Step(C2S, b.record(b.HANDSHAKE, b.client_key_exchange()) + b.CHANGE_CIPHER_SPEC, ts_ns=2_200_000_000),
        Step(S2C, b.CHANGE_CIPHER_SPEC + b.app_data(), ts_ns=2_300_000_000, fin=True),
    ]


@pytest.mark.parametrize(("client", "server"), [
    (LDAP_STARTTLS_REQUEST, LDAP_STARTTLS_RESPONSE),
    (b"a001 STARTTLS\r\n", b"* OK IMAP4rev1 ready\r\na001 OK Begin TLS negotiation now\r\n"),
    (b"AUTH TLS\r\n", b"220 FTP ready\r\n234 AUTH TLS OK.\r\n"),
    # cleartext holding what looks like a record header, but no hello behind it
    (b"\x30\x16\x03\x01\x00\x05junk\x16\x03\x03\x00\x30\x01\x00\x00\x10\x02", b"+OK\x16\x03\r\n"),
])
def test_cleartext_before_the_handshake_is_skipped(client: bytes, server: bytes) -> None:
    [txn] = run(starttls_steps(client, server))
    tls = tls_of(txn)
    assert tls["client"]["server_name"] == SNI and tls["established"] is True
    assert tls["cipher"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert txn.ts_ns == 2_000_000_000  # the TLS session starts at its first record, not at the cleartext


def test_cleartext_past_the_resync_limit_gives_up_on_the_direction() -> None:
    from agent.protocols.tls.parser import RESYNC_LIMIT

    counters = metrics.register("test.tls")
    before = counters["resync_abandoned"]
    steps = starttls_steps(b"x" * (RESYNC_LIMIT + 100), b"")
    steps[1] = Step(S2C, b"220 ok\r\n", ts_ns=1_100_000_000)
    run_stream("tls", steps, server_port=443)
    assert counters["resync_abandoned"] > before
