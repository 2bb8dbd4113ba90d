"""URI and From/To/Contact splitting: Packetbeat's TestParseURI and TestParseFromTo, plus edge cases."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.protocols.sip.uri import _parse_uri_slowly, parse_name_addr, parse_uri


@pytest.mark.parametrize(("text", "scheme", "user", "host", "port", "params"), [
    ("sip:test@10.0.2.15:5060", "sip", "test", "10.0.2.15", 5060, {}),
    ("sips:test@10.0.2.15:5061 ; transport=udp", "sips", "test", "10.0.2.15", 5061, {"transport": "udp"}),
    ("mailto:192.168.0.2", "mailto", "", "192.168.0.2", 0, {}),
    # below: not in Packetbeat's test, same algorithm
    ("sip:alice:secret@example.test:5070;transport=tcp;lr", "sip", "alice:secret", "example.test", 5070,
     {"transport": "tcp"}),
    ("sip:[2001:db8::1]:5060;maddr=x", "sip", "", "[2001:db8::1]", 5060, {"maddr": "x"}),
    ("sip:bob@[2001:db8::1]", "sip", "bob", "[2001:db8::1]", 0, {}),
    ("sip:201@10.33.6.101;user=phone", "sip", "201", "10.33.6.101", 0, {"user": "phone"}),
    ("sip:host.example:notaport", "sip", "", "host.example", 0, {}),
    ("sip:host.example:99999", "sip", "", "host.example", 0, {}),
    ("sip:a\\;b@host", "sip", "a\\;b", "host", 0, {}),
    ("tel:+1-201-555-0123", "tel", "", "+1-201-555-0123", 0, {}),
    ("no-scheme-here", "", "", "", 0, {}),
    ("", "", "", "", 0, {}),
    ("<sip:35104723@sip.cybercity.dk>", "<sip", "35104723", "sip.cybercity.dk>", 0, {}),  # Packetbeat's quirk
])
def test_parse_uri(text: str, scheme: str, user: str, host: str, port: int, params: dict[str, str]) -> None:
    uri = parse_uri(text)
    assert (uri.scheme, uri.username, uri.host, uri.port, dict(uri.params)) == (scheme, user, host, port, params)
    assert uri.original == text.strip()


@pytest.mark.parametrize(("text", "display", "uri", "params"), [
    # To
    ("test <sip:test@10.0.2.15:5060>;tag=QvN921", "test", "sip:test@10.0.2.15:5060", {"tag": "QvN921"}),
    ("test <sip:test@10.0.2.15:5060>", "test", "sip:test@10.0.2.15:5060", {}),
    # From
    ('"PCMU/8000"   <sip:sipp@10.0.2.15:5060>;tag=1', "PCMU/8000", "sip:sipp@10.0.2.15:5060", {"tag": "1"}),
    ('  "Matthew Hodgson" <sip:matthew@mxtelecom.com>;tag=5c7cdb68', "Matthew Hodgson", "sip:matthew@mxtelecom.com",
     {"tag": "5c7cdb68"}),
    ("<sip:matthew@mxtelecom.com>;tag=5c7cdb68", "", "sip:matthew@mxtelecom.com", {"tag": "5c7cdb68"}),
    ("<sip:matthew@mxtelecom.com>", "", "sip:matthew@mxtelecom.com", {}),
    # Contact
    ("  <sip:test@10.0.2.15:5060;transport=udp>", "", "sip:test@10.0.2.15:5060;transport=udp", {}),
    ("<sip:voi18062@192.168.1.2:5060;line=aca6b97ca3f5e51a>;expires=1200;q=0.500", "",
     "sip:voi18062@192.168.1.2:5060;line=aca6b97ca3f5e51a", {"expires": "1200", "q": "0.500"}),
    (' "Mr. Watson" <sip:watson@worcester.bell-telephone.com>;q=0.7; expires=3600', "Mr. Watson",
     "sip:watson@worcester.bell-telephone.com", {"q": "0.7", "expires": "3600"}),
    (' "Mr. Watson" <mailto:watson@bell-telephone.com> ;q=0.1', "Mr. Watson", "mailto:watson@bell-telephone.com",
     {"q": "0.1"}),
    # the URI is not bounded by <...>
    ("   sip:test@10.0.2.15:5060;transport=udp", "", "sip:test@10.0.2.15:5060", {"transport": "udp"}),
    ("sip:test@10.0.2.15:5060", "", "sip:test@10.0.2.15:5060", {}),
    # malformed: an unclosed '<' or a '>' first
    ("Bob <sip:bob@example.test", "Bob", "sip:bob@example.test", {}),
    ("> Bob <sip:bob@example.test>;tag=9", "> Bob", "sip:bob@example.test", {"tag": "9"}),
    ("", "", "", {}),
])
def test_parse_from_to_contact(text: str, display: str, uri: str, params: dict[str, str]) -> None:
    addr = parse_name_addr(text)
    assert (addr.display, addr.uri, dict(addr.params)) == (display, uri, params)


@settings(max_examples=int(os.environ.get("SIP_FUZZ_EXAMPLES", "400")), deadline=None)
@given(st.text(alphabet="sip:@;=.[]\\ abc01-", max_size=30))
def test_fast_path_agrees_with_the_character_walk(text: str) -> None:
    uri = text.strip()
    colon = uri.find(":")
    if colon < 0 or "[" in uri or "\\" in uri:
        return
    fast = parse_uri(text)
    slow = _parse_uri_slowly(uri, colon)
    assert (fast.scheme, fast.username, fast.host, fast.port, dict(fast.params)) == (
        slow.scheme, slow.username, slow.host, slow.port, dict(slow.params))
