"""The DNS message decoder on literal bytes: names, sections, every record type, EDNS0."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pytest

from agent.protocols.dns import domain
from agent.protocols.dns.domain import opaque_text
from agent.protocols.dns.fields import dns_fields, domain_parts, message_text, opt_fields
from agent.protocols.dns.parser import DnsMessage, TcpFramer, parse_message
from agent.protocols.stream import Gap
from agent.transport.session import ParseError
from tests.protocols.dns import vectors as V
from tests.protocols.dns.vectors import encode_name, header, opt_rr, option, question, rr

PTR_QNAME = b"\xc0\x0c"  # a pointer to the question name, which starts at offset 12


def fields_of(raw: bytes, authorities: bool = True, additionals: bool = True) -> dict:
    return dns_fields(parse_message(raw), authorities, additionals)[0]


def answer_of(rtype: int, rdata: bytes, qtype: int | None = None) -> dict:
    """The single rendered answer of a response carrying one record of `rtype`."""
    msg = header(7, 0x8180, 1, 1) + question("example.com", qtype or rtype) + rr(PTR_QNAME, rtype, rdata)
    answers = fields_of(msg)["answers"]
    assert len(answers) == 1
    return answers[0]


# -- Packetbeat's captured exchanges ---------------------------------------------------

@pytest.mark.parametrize("ex", V.UDP_EXCHANGES, ids=lambda ex: ex.qname[:20] + "/" + ex.qtype)
def test_go_vectors_udp(ex: V.Exchange) -> None:
    request = parse_message(ex.request)
    response = parse_message(ex.response)
    assert (request.id, response.id) == (ex.id, ex.id)
    assert not request.response and response.response
    d = fields_of(ex.response)
    q = d["question"]
    assert (q["name"], q["type"], q["class"]) == (ex.qname, ex.qtype, "IN")
    assert q.get("etld_plus_one") == ex.etld and q.get("registered_domain") == ex.etld
    assert q.get("top_level_domain") == ex.tld
    assert q.get("subdomain") == ex.subdomain
    assert d["response_code"] == ex.rcode
    assert d["header_flags"] == list(ex.flags)
    assert sorted(a["data"] for a in d.get("answers") or []) == sorted(ex.answers)
    assert sorted(a["data"] for a in d.get("authorities") or []) == sorted(ex.authorities)


@pytest.mark.parametrize("ex", V.TCP_EXCHANGES, ids=lambda ex: ex.qname[:20] + "/" + ex.qtype)
def test_go_vectors_tcp_payloads(ex: V.Exchange) -> None:
    d = fields_of(ex.response[2:])
    assert d["question"]["name"] == ex.qname and d["question"]["type"] == ex.qtype
    assert sorted(a["data"] for a in d.get("answers") or []) == sorted(ex.answers)
    assert sorted(a["data"] for a in d.get("authorities") or []) == sorted(ex.authorities)


def test_sophos_query_name_is_230_bytes_of_labels() -> None:
    msg = parse_message(V.SOPHOS_TXT.request)
    assert len(V.SOPHOS_TXT.request) == 237  # the size of the captured query
    assert msg.questions[0].name == V.SOPHOS_QNAME
    assert len(V.SOPHOS_TXT.request) == V.SOPHOS_TXT_TCP.request[0] << 8 | V.SOPHOS_TXT_TCP.request[1]


def test_truncated_response_counts_the_address_less_record_but_does_not_list_it() -> None:
    d = fields_of(V.ELASTIC_NO_IP.response)
    assert d["flags"]["truncated_response"] is True
    assert d["answers_count"] == 1
    assert d["answers"] is None  # stripped from the event, as Packetbeat's null
    assert "resolved_ip" not in d


def test_ixfr_answers_mix_soa_and_a() -> None:
    d = fields_of(V.ZONE_IXFR.response)
    assert [a["type"] for a in d["answers"]] == ["SOA", "SOA", "SOA", "A", "SOA"]
    soa = d["answers"][0]
    assert soa == {"name": "etas.com", "type": "SOA", "class": "IN", "ttl": "3600", "data": "training2003p",
                   "rname": "hostmaster", "serial": 4, "refresh": 60, "retry": 600, "expire": 86400,
                   "minimum": 3600}
    assert d["resolved_ip"] == ["1.1.1.100"]
    # The query carried the client's SOA in its authority section.
    assert fields_of(V.ZONE_IXFR.request)["authorities_count"] == 1


def test_all_rr_cases() -> None:
    assert fields_of(V.UNHANDLED_RR)["question"]["type"] == "NXT"
    assert fields_of(V.UNKNOWN_RR)["question"]["type"] == "65280"
    d = fields_of(V.OPT_QUERY)
    assert d["opt"] == {"do": True, "version": "0", "udp_size": 4096, "ext_rcode": "NOERROR"}
    assert d["header_flags"] == ["RD", "DO"]
    assert d["additionals_count"] == 0  # the OPT record is not counted
    assert "additionals" not in d


# -- names and compression -------------------------------------------------------------

def test_forward_pointer_is_rejected() -> None:
    msg = header(1, 0x0100) + b"\xc0\x20" + struct.pack("!HH", 1, 1) + b"\x00" * 20
    with pytest.raises(ParseError, match="backwards"):
        parse_message(msg)


def test_pointer_to_itself_is_rejected() -> None:
    msg = header(1, 0x0100) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)
    with pytest.raises(ParseError, match="backwards"):
        parse_message(msg)


def test_compression_loop_is_rejected() -> None:
    # The answer's name points to offset 30, whose label is followed by a pointer back to 30's name.
    q = question("a.example", 1)
    body = header(1, 0x8180, 1, 1) + q
    loop_at = len(body)
    name = b"\x01x" + struct.pack("!H", 0xC000 | loop_at)  # label, then a pointer to its own start
    with pytest.raises(ParseError, match="backwards"):
        parse_message(body + name + struct.pack("!HHIH", 1, 1, 0, 4) + b"\x01\x02\x03\x04")


def test_chained_backward_pointers_are_followed() -> None:
    q = question("www.example.com", 1)
    # "mail" + pointer to "example.com" (offset 16) ; then the answer points to that name.
    owner = b"\x04mail\xc0\x10"
    answer = rr(PTR_QNAME, 5, owner)  # CNAME rdata: mail.example.com
    second_at = 12 + len(q) + 12  # where the CNAME rdata starts
    answer2 = rr(struct.pack("!H", 0xC000 | second_at), 1, b"\x0a\x00\x00\x01")
    d = fields_of(header(1, 0x8180, 1, 2) + q + answer + answer2)
    assert [(a["name"], a["data"]) for a in d["answers"]] == [("www.example.com", "mail.example.com"),
                                                            ("mail.example.com", "10.0.0.1")]


def test_remembered_names_read_as_walked_and_still_anchor_pointers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(domain, "_plain_names", {})
    q = question("www.example.com", 1)
    message = header(1, 0x8180, 1, 1) + q + rr(PTR_QNAME, 5, b"\x04mail\xc0\x10")
    first = parse_message(message)
    assert domain._plain_names == {encode_name("www.example.com"): ("www.example.com.", 16)}
    again = parse_message(message)  # the question's name is now remembered; the pointers still find it
    assert again == first
    assert [(r.name, r.fields) for r in again.answers] == [("www.example.com", {"data": "mail.example.com"})]
    # A remembered name must still fit its field: cut inside it, the walk reports the error.
    with pytest.raises(ParseError, match="runs past the end"):
        parse_message(header(1, 0x0100) + q[:9])


def test_remembered_names_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(domain, "_plain_names", {})
    monkeypatch.setattr(domain, "PLAIN_NAME_CACHE_LIMIT", 3)
    for n in range(7):
        parse_message(header(1, 0x0100) + question(f"host{n}.test", 1))
        assert 1 <= len(domain._plain_names) <= 3


def test_name_longer_than_255_octets_is_rejected() -> None:
    long_name = ".".join(["a" * 63] * 4)  # 4 * 64 + 1 = 257 octets
    with pytest.raises(ParseError, match="longer than 255"):
        parse_message(header(1, 0x0100) + question(long_name, 1))
    ok_name = ".".join(["a" * 63] * 3 + ["a" * 61])  # 254 + root = 255 octets
    assert parse_message(header(1, 0x0100) + question(ok_name, 1)).questions[0].name == ok_name


def test_reserved_label_type_is_rejected() -> None:
    with pytest.raises(ParseError, match="reserved label type"):
        parse_message(header(1, 0x0100) + b"\x41abc" + b"\x00" * 5)


def test_labels_escape_special_and_binary_bytes() -> None:
    name = b"\x05a.b c\x03\x00\xff\"\x03com\x00"
    d = fields_of(header(1, 0x0100) + name + struct.pack("!HH", 1, 1))
    assert d["question"]["name"] == 'a\\.b\\ c.\\000\\255\\".com'


def test_root_question() -> None:
    d = fields_of(header(1, 0x0100) + b"\x00" + struct.pack("!HH", 2, 1))
    # The root's one dot makes Packetbeat's fallback take it as a registered domain.
    assert d["question"] == {"name": ".", "type": "NS", "class": "IN", "registered_domain": "."}


@pytest.mark.parametrize(("name", "parts"), [
    ("www.example.com", {"etld_plus_one": "example.com", "registered_domain": "example.com",
                         "top_level_domain": "com", "subdomain": "www"}),
    ("example.com", {"etld_plus_one": "example.com", "registered_domain": "example.com", "top_level_domain": "com"}),
    ("a.b.bbc.co.uk", {"etld_plus_one": "bbc.co.uk", "registered_domain": "bbc.co.uk", "top_level_domain": "co.uk",
                       "subdomain": "a.b"}),
    ("co.uk", {"registered_domain": "co.uk", "top_level_domain": "uk"}),
    ("localhost", {}),
    ("WwW.ExAmPlE.CoM", {"etld_plus_one": "ExAmPlE.CoM", "registered_domain": "ExAmPlE.CoM",
                         "top_level_domain": "CoM", "subdomain": "WwW"}),
    ("foo.github.io", {"etld_plus_one": "foo.github.io", "registered_domain": "foo.github.io",
                       "top_level_domain": "github.io"}),
    ("x.unknowntld", {"etld_plus_one": "x.unknowntld", "registered_domain": "x.unknowntld",
                      "top_level_domain": "unknowntld"}),
])
def test_domain_parts(name: str, parts: dict) -> None:
    assert domain_parts(name) == parts


IDN_NAMES = [
    "www.xn--fiqs8s", "a.b.xn--55qx5d.cn", "shop.xn--p1ai", "x.XN--P1AI", "b\u00fccher.example.de",
    "foo.\u4e2d\u56fd", "a.b.c.xn--j1amh", "x.y.xn--mgbaam7a8h", "deep.x.y.z.kawasaki.jp", "city.kobe.jp",
    "www.example.com", "xn--nxasmq6b.com", "x.xn--io0a7i",
]


@pytest.mark.parametrize("name", IDN_NAMES)
def test_public_suffix_matches_the_library_default(name: str) -> None:
    """The lazily-encoded list gives the library's own answer, punycode and Unicode names included."""
    from publicsuffixlist import PublicSuffixList

    from agent.protocols.dns.fields import _public_suffix

    assert _public_suffix(name) == PublicSuffixList().publicsuffix(name)


# -- sections ------------------------------------------------------------------------

def test_compiled_suffix_rules_match_the_library_on_every_rule() -> None:
    """SuffixRules replaces the library's lookup: on every rule of the list (as itself, under one and two more
    labels, without its wildcard or exception mark), the names of the library's own test file, and odd names."""
    import re

    from publicsuffixlist import PSLFILE, PublicSuffixList

    from agent.protocols.dns.fields import SuffixRules

    lines = Path(PSLFILE).read_bytes().decode("utf-8", "surrogateescape").splitlines()
    library, ours = PublicSuffixList(lines, accept_encoded_idn=False), SuffixRules(lines)
    rules = {line.split(" ")[0].strip() for line in lines if line.strip() and not line.startswith("//")}
    names = {"", ".", "..", "com.", "a..com", "A.B.Example.COM.", "x.kobe.jp", "www.ck", "a.www.ck", "b.a.www.ck"}
    for rule in rules:
        bare = rule.lstrip("!").removeprefix("*.")
        names.update((bare, "x." + bare, "y.x." + bare, rule.lstrip("!"), "w." + rule.lstrip("!").replace("*", "w")))
    test_file = Path(PSLFILE).with_name("test_psl.txt")
    names.update(re.findall(r"checkPublicSuffix\('([^']*)'", test_file.read_text()) if test_file.exists() else [])
    assert len(names) > 20000
    assert [n for n in names if ours.public_suffix(n) != library.publicsuffix(n)] == []


def test_header_alone_is_not_dns() -> None:
    with pytest.raises(ParseError):
        parse_message(header(1, 0x8185, 0))
    with pytest.raises(ParseError):
        parse_message(b"\x00\x01\x02")
    with pytest.raises(ParseError):
        parse_message(bytes(range(14)))  # Packetbeat's "malformed packet" case


def test_missing_question_is_an_error_but_missing_records_are_not() -> None:
    with pytest.raises(ParseError):
        parse_message(header(1, 0x0100, qd=2) + question("example.com", 1))
    msg = parse_message(header(1, 0x8180, 1, an=5) + question("example.com", 1) + rr(PTR_QNAME, 1, b"\x01\x02\x03\x04"))
    assert len(msg.answers) == 1


def test_every_truncation_of_a_response_parses_or_raises_parse_error() -> None:
    raw = V.GITHUB_PTR.response
    boundaries = set()
    for cut in range(len(raw) + 1):
        try:
            msg = parse_message(raw[:cut])
        except ParseError:
            continue
        boundaries.add(len(msg.answers) + len(msg.authorities))
    # Whole records only: every count from the question alone to all 14 records.
    assert boundaries == set(range(15))


def test_trailing_bytes_after_the_last_record_are_ignored() -> None:
    msg = parse_message(V.ELASTIC_A.response + b"\xde\xad\xbe\xef")
    assert [a.fields["data"] for a in msg.answers if a.fields] == ["54.148.130.30", "54.69.104.66"]
    assert msg.length == len(V.ELASTIC_A.response) + 4


def test_record_must_consume_its_rdata_exactly() -> None:
    with pytest.raises(ParseError, match="left over"):
        answer_of(1, b"\x01\x02\x03\x04\x05")
    with pytest.raises(ParseError):
        answer_of(1, b"\x01\x02")
    with pytest.raises(ParseError):  # RDLENGTH past the end of the message
        parse_message(header(1, 0x8180, 1, 1) + question("example.com", 1) + PTR_QNAME
                      + struct.pack("!HHIH", 1, 1, 0, 40) + b"\x01\x02\x03\x04")


def test_record_may_stop_at_a_field_boundary() -> None:
    # An MX with only its preference: accepted, with an empty exchange (as Packetbeat).
    assert answer_of(15, b"\x00\x0a")["data"] == ""
    with pytest.raises(ParseError):
        answer_of(15, b"\x00")


def test_opcode_and_rcode_names() -> None:
    d = fields_of(header(1, 0x2800 | 0x8000 | 5, 1) + question("example.com", 6))
    assert d["op_code"] == "UPDATE" and d["response_code"] == "REFUSED"
    d = fields_of(header(1, 0x3000 | 0x8000 | 12, 1) + question("example.com", 6))
    assert d["op_code"] == "6" and d["response_code"] == "Unknown 12"


# -- record types ----------------------------------------------------------------------

def test_a_and_aaaa() -> None:
    assert answer_of(1, bytes([192, 0, 2, 1]))["data"] == "192.0.2.1"
    v6 = bytes.fromhex("20010db8000000000000000000000001")
    assert answer_of(28, v6)["data"] == "2001:db8::1"
    # Go prints an IPv4-mapped address in dotted form, and an IPv4-compatible one in hex.
    assert answer_of(28, bytes(10) + b"\xff\xff" + bytes([1, 2, 3, 4]))["data"] == "1.2.3.4"
    assert answer_of(28, bytes(12) + bytes([1, 2, 3, 4]))["data"] == "::102:304"


def test_name_types() -> None:
    target = encode_name("ns1.example.net")
    for rtype, type_name in ((2, "NS"), (5, "CNAME"), (12, "PTR")):
        assert answer_of(rtype, target) == {"name": "example.com", "type": type_name, "class": "IN", "ttl": "300",
                                            "data": "ns1.example.net"}


def test_mx_srv_soa() -> None:
    assert answer_of(15, b"\x00\x05" + encode_name("mx.example.com")) == {
        "name": "example.com", "type": "MX", "class": "IN", "ttl": "300", "preference": 5,
        "data": "mx.example.com"}
    srv = answer_of(33, struct.pack("!HHH", 10, 60, 5060) + encode_name("sip.example.com"))
    assert (srv["priority"], srv["weight"], srv["port"], srv["data"]) == (10, 60, 5060, "sip.example.com")
    soa = answer_of(6, encode_name("ns.example.com") + encode_name("admin.example.com")
                    + struct.pack("!IIIII", 2024010101, 7200, 3600, 1209600, 300))
    assert soa["data"] == "ns.example.com" and soa["rname"] == "admin.example.com"
    assert (soa["serial"], soa["refresh"], soa["retry"], soa["expire"], soa["minimum"]) == (
        2024010101, 7200, 3600, 1209600, 300)


def test_txt_strings_are_joined_and_escaped() -> None:
    rdata = b"\x05hello" + b"\x0bwor\"ld\\ \x01\xe9!" + b"\x00"
    assert answer_of(16, rdata)["data"] == 'hello wor\\"ld\\\\ \\001\\233! '
    long_txt = b"".join(bytes((255,)) + bytes([0x41 + i]) * 255 for i in range(4))
    assert answer_of(16, long_txt)["data"] == " ".join(chr(0x41 + i) * 255 for i in range(4))


def test_dnssec_types() -> None:
    key = bytes(range(40))
    dnskey = answer_of(48, struct.pack("!HBB", 257, 3, 13) + key)
    assert dnskey == {"name": "example.com", "type": "DNSKEY", "class": "IN", "ttl": "300", "flags": "257",
                      "protocol": "3", "algorithm": "ECDSAP256SHA256", "data": base64.b64encode(key).decode()}
    ds = answer_of(43, struct.pack("!HBB", 2371, 13, 2) + bytes.fromhex("1f987cc6583e92df0890718c42"))
    assert (ds["key_tag"], ds["algorithm"], ds["digest_type"], ds["data"]) == (
        "2371", "ECDSAP256SHA256", "SHA256", "1F987CC6583E92DF0890718C42")
    sig = answer_of(46, struct.pack("!HBBIIIH", 1, 8, 2, 3600, 1700000000, 1690000000, 12345)
                    + encode_name("example.com") + b"\x01\x02\x03")
    assert sig == {"name": "example.com", "type": "RRSIG", "class": "IN", "ttl": "300", "type_covered": "A",
                   "algorithm": "RSASHA256", "labels": "2", "original_ttl": "3600", "expiration": "20231114221320",
                   "inception": "20230722042640", "key_tag": "12345", "signer_name": "example.com",
                   "data": "AQID"}
    bitmap = b"\x00\x07\x62\x01\x80\x08\x00\x03\x80" + b"\x01\x01\x40"  # window 0, then 257 in window 1
    nsec = answer_of(47, encode_name("host.example.com") + bitmap)
    assert nsec["data"] == "host.example.com."  # Packetbeat keeps this name's trailing dot
    assert nsec["type_bits"] == "A NS SOA MX TXT AAAA RRSIG NSEC DNSKEY CAA"
    nsec3 = answer_of(50, struct.pack("!BBHB", 1, 1, 10, 4) + bytes.fromhex("aabbccdd") + b"\x14" + bytes(20)
                      + b"\x00\x01\x40")
    assert nsec3 == {"name": "example.com", "type": "NSEC3", "class": "IN", "ttl": "300", "hash": "SHA1",
                     "flags": "1", "iterations": "10", "salt": "AABBCCDD", "type_bits": "A",
                     "data": "0" * 32}
    param = answer_of(51, struct.pack("!BBHB", 1, 0, 0, 0))
    assert (param["hash"], param["flags"], param["iterations"], param["data"]) == ("SHA1", "0", "0", "-")


def test_bad_type_bitmaps_are_rejected() -> None:
    for bitmap in (b"\x00\x00", b"\x00\x21" + bytes(33), b"\x01\x01\x40\x00\x01\x40", b"\x00\x05\x40"):
        with pytest.raises(ParseError):
            answer_of(47, encode_name("a.example") + bitmap)


def test_types_packetbeat_renders_as_opaque_rdata() -> None:
    caa = answer_of(257, b"\x00\x05issueletsencrypt.org")
    assert caa == {"name": "example.com", "type": "CAA", "class": "IN", "ttl": "300",
                   "data": "\\000\\005issueletsencrypt.org"}
    assert answer_of(52, b"\x03\x01\x01\xab\xcd")["data"] == "\\003\\001\\001\\171\\205"  # TLSA
    assert answer_of(44, b"\x04\x02\x0a\x22\x5c")["data"] == '\\004\\002\\n\\"\\\\'  # SSHFP
    assert answer_of(13, b"\x03x86\x05Linux")["data"] == "\\003x86\\005Linux"  # HINFO
    naptr = struct.pack("!HH", 100, 10) + b"\x01S\x07SIP+D2U\x00" + encode_name("_sip._udp.example.com")
    assert answer_of(35, naptr)["data"] == ("\\000d\\000\\n\\001S\\007SIP+D2U\\000\\004_sip\\004_udp"
                                            "\\007example\\003com\\000")
    svcb = struct.pack("!H", 1) + b"\x00" + struct.pack("!HH", 1, 3) + b"\x02h2"
    assert answer_of(65, svcb)["data"] == "\\000\\001\\000\\000\\001\\000\\003\\002h2"  # HTTPS
    assert answer_of(99, b"\x0bv=spf1 -all")["data"] == "\\011v=spf1 -all"  # SPF is not TXT for Packetbeat
    assert answer_of(0xFF00, b"\x01\x02hi")["type"] == "65280"
    assert answer_of(0xFF00, b"\x01\x02hi")["data"] == "\\001\\002hi"


def test_compressed_names_in_opaque_rdata_are_written_out() -> None:
    # RP with both names compressed to the question name: rendered uncompressed.
    rp = answer_of(17, PTR_QNAME + PTR_QNAME)
    assert rp["data"] == "\\007example\\003com\\000\\007example\\003com\\000"


def test_svcb_keys_must_increase() -> None:
    params = struct.pack("!HH", 3, 2) + b"\x01\xbb" + struct.pack("!HH", 1, 3) + b"\x02h2"
    with pytest.raises(ParseError, match="increasing"):
        answer_of(64, b"\x00\x01\x00" + params)


def test_empty_rdata() -> None:
    assert answer_of(15, b"") == {"name": "example.com", "type": "MX", "class": "IN", "ttl": "300",
                                  "preference": 0, "data": ""}
    assert answer_of(257, b"")["data"] == ""
    d = fields_of(header(1, 0x8180, 1, 2) + question("example.com", 28) + rr(PTR_QNAME, 28, b"")
                  + rr(PTR_QNAME, 28, bytes(16)))
    assert d["answers_count"] == 2 and [a["data"] for a in d["answers"]] == ["::"]


def test_classes() -> None:
    msg = header(1, 0x8180, 1, 2) + question("version.bind", 16, 3) + rr(PTR_QNAME, 16, b"\x019", rclass=3) \
        + rr(PTR_QNAME, 16, b"\x019", rclass=77)
    d = fields_of(msg)
    assert d["question"]["class"] == "CH"
    assert [a["class"] for a in d["answers"]] == ["CH", "77"]


# -- EDNS0 ---------------------------------------------------------------------------

def edns_response(opt: bytes, rcode: int = 0) -> DnsMessage:
    return parse_message(header(9, 0x8180 | rcode, 1, 0, 0, 1) + question("example.com", 1) + opt)


def test_opt_record_and_options() -> None:
    options = (option(3, b"ns1") + option(8, b"\x00\x01\x18\x00\xc0\x00\x02")
               + option(10, bytes.fromhex("0102030405060708")) + option(5, bytes([8, 13, 200]))
               + option(6, bytes([1, 2])) + option(7, bytes([1])) + option(12, bytes(20)))
    msg = edns_response(opt_rr(1232, True, options, version=0))
    assert opt_fields(msg.edns) == {
        "do": True, "version": "0", "udp_size": 1232, "ext_rcode": "NOERROR", "nsid": "6e7331",
        "subnet": "192.0.2.0/24/0", "cookie": "0102030405060708", "dau": " RSASHA256 ECDSAP256SHA256 200",
        "dhu": " SHA1 SHA256", "n3u": " SHA1"}


def test_more_edns_options() -> None:
    v6 = option(8, b"\x00\x02\x38\x00" + bytes.fromhex("20010db8000000"))
    ul = option(2, struct.pack("!II", 3600, 60))
    llq = option(1, struct.pack("!HHHQI", 1, 2, 0, 99, 3600))
    assert opt_fields(edns_response(opt_rr(options=v6 + ul + llq)).edns) | {} == {
        "do": False, "version": "0", "udp_size": 4096, "ext_rcode": "NOERROR", "subnet": "[2001:db8::]/56/0",
        "ul": "3600 60", "llq": "1 2 0 99 3600"}
    # EXPIRE and unknown options both land in "local" (the last one wins, as in Packetbeat).
    assert opt_fields(edns_response(opt_rr(options=option(9, struct.pack("!I", 600)))).edns)["local"] == "600"
    assert opt_fields(edns_response(opt_rr(options=option(65001, b"\xab"))).edns)["local"] == "65001:0xab"
    # A malformed client-subnet option is left out, the message still decodes.
    assert "subnet" not in opt_fields(edns_response(opt_rr(options=option(8, b"\x00\x07\x00\x00"))).edns)


def test_option_overrunning_the_opt_record_is_rejected() -> None:
    with pytest.raises(ParseError):
        edns_response(opt_rr(options=struct.pack("!HH", 3, 10) + b"abc"))


def test_extended_rcode_and_version() -> None:
    msg = edns_response(opt_rr(ext_rcode=1, version=1), rcode=0)
    assert msg.rcode == 16
    d = dns_fields(msg, False, False)[0]
    assert d["response_code"] == "BADSIG" and d["opt"]["ext_rcode"] == "BADSIG" and d["opt"]["version"] == "1"


def test_opt_is_excluded_from_additionals() -> None:
    glue = rr(encode_name("ns.example.com"), 1, bytes([192, 0, 2, 53]))
    raw = header(9, 0x8180, 1, 0, 0, 2) + question("example.com", 2) + glue + opt_rr()
    d = fields_of(raw)
    assert d["additionals_count"] == 1
    assert [a["data"] for a in d["additionals"]] == ["192.0.2.53"]
    assert "resolved_ip" not in d  # only answers resolve
    assert fields_of(raw, additionals=False).get("additionals") is None


# -- text rendering (send_request / send_response) ----------------------------------------

def test_message_text() -> None:
    assert message_text(parse_message(V.ELASTIC_A.request)) == (
        "ID 8529; QR query; OPCODE QUERY; FLAGS rd; RCODE NOERROR; QUESTION class IN, type A, elastic.co")
    text = message_text(parse_message(V.ZONE_IXFR.response))
    assert text.endswith("ANSWER rname hostmaster, training2003p; rname hostmaster, training2003p; "
                         "rname hostmaster, training2003p; 1.1.1.100; rname hostmaster, training2003p")
    # OPT renders as an empty record; numeric fields (MX preference) do not appear, the root stays ".".
    raw = header(3, 0x8180, 1, 1, 0, 1) + question("example.com", 15) + rr(PTR_QNAME, 15, b"\x00\x05\x00") \
        + opt_rr(do=True)
    assert message_text(parse_message(raw)) == (
        "ID 3; QR response; OPCODE QUERY; FLAGS rd ra; RCODE NOERROR; QUESTION class IN, type MX, example.com; "
        "ANSWER .; ADDITIONAL ")


# -- TCP framing -----------------------------------------------------------------------

def test_framer_splits_and_joins() -> None:
    a, b = V.ELASTIC_A_TCP.request, V.GITHUB_PTR_TCP.request
    framer = TcpFramer()
    stream = a + b
    out = []
    for i in range(len(stream)):
        out += framer.feed(stream[i:i + 1], i)
    assert [m for m, _ in out] == [a[2:], b[2:]]
    assert [ts for _, ts in out] == [0, len(a)]  # each message dated by its first byte
    assert [m for m, _ in TcpFramer().feed(stream + b"\x00", 5)] == [a[2:], b[2:]]


def test_framer_gap_inside_a_message_skips_its_rest() -> None:
    a, b = V.ELASTIC_A_TCP.response, V.GITHUB_PTR_TCP.response
    framer = TcpFramer()
    assert framer.feed(a[:50], 1) == []
    assert framer.gap(20, 1) == Gap([a[2:50]], True)  # bytes 50..70 lost: the head of the cut message comes back
    assert framer.feed(a[70:] + b, 2) == [(b[2:], 2)]
    assert framer.gap(5, 1).messages == [] and TcpFramer().gap(5, 1).messages == []  # at a boundary: nothing cut
    assert framer.close() is None
    framer.feed(b"\x00", 3)
    assert framer.close() == b""


def test_framer_zero_length() -> None:
    assert TcpFramer().feed(b"\x00\x00" + V.ELASTIC_A_TCP.request, 0) == [(b"", 0), (V.ELASTIC_A_TCP.request[2:], 0)]


OPAQUE_SAMPLES = {
    29: struct.pack("!BBBBIII", 0, 0x12, 0x16, 0x13, 0x89ABCDEF, 0x70000000, 10000000),  # LOC
    108: bytes.fromhex("00005e0053ff"),  # EUI48
    109: bytes.fromhex("00005eef10000000"),  # EUI64
    256: struct.pack("!HH", 10, 1) + b"ftp://ftp1.example.com/public",  # URI
    37: struct.pack("!HHB", 1, 12345, 8) + bytes(8),  # CERT
    49: bytes(range(20)),  # DHCID
    61: bytes(range(30)),  # OPENPGPKEY
    63: struct.pack("!IBB", 2018031900, 1, 1) + bytes(48),  # ZONEMD
    62: struct.pack("!IH", 66, 3) + b"\x00\x01\x60",  # CSYNC of A and NS
    45: b"\x0a\x01\x02" + bytes([192, 0, 2, 38]) + b"key",  # IPSECKEY with an IPv4 gateway
    260: b"\x0a\x02" + bytes(16),  # AMTRELAY with an IPv6 relay
    42: struct.pack("!HBB", 1, 24, 3) + bytes([192, 168, 32]),  # APL
    105: struct.pack("!H", 10) + bytes([10, 1, 2, 3]),  # L32
    55: struct.pack("!BBH", 2, 2, 3) + b"\xab\xcd" + b"key",  # HIP without rendezvous servers
    10: b"anything",  # NULL
    44: b"\x01\x01" + bytes(20),  # SSHFP
}


@pytest.mark.parametrize("rtype", sorted(OPAQUE_SAMPLES))
def test_opaque_types_accept_well_formed_rdata(rtype: int) -> None:
    rdata = OPAQUE_SAMPLES[rtype]
    answer = answer_of(rtype, rdata)
    assert answer["type"] != str(rtype)  # a type with a name
    assert answer["data"] == opaque_text(rdata)


def test_opaque_types_reject_malformed_rdata() -> None:
    for rtype, rdata in ((29, b"\x00" * 15), (108, b"\x00" * 5), (42, struct.pack("!HBB", 3, 0, 0)),
                         (45, b"\x0a\x01\x02\xc0\x00"), (13, b"\x05abc")):
        with pytest.raises(ParseError):
            answer_of(rtype, rdata)
