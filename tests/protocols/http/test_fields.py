"""URL, parameter, Host, cookie and Basic-auth rendering, and body decoding."""

from __future__ import annotations

import gzip
import zlib

import pytest

from agent.protocols.http import body as b
from agent.protocols.http import url as f
from tests.protocols.http import messages as m


@pytest.mark.parametrize(("header", "expected"), [
    ("", ("", 0)),
    ("localhost", ("localhost", 0)),
    ("localhost:0", ("localhost:0", 0)),
    ("localhost:9001", ("localhost", 9001)),
    ("localhost:9000000", ("localhost:9000000", 0)),
    ("localhost:-1", ("localhost:-1", 0)),
    ("127.0.0.1", ("127.0.0.1", 0)),
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("[::]", ("::", 0)),
    ("[::1]:9200", ("::1", 9200)),
    ("fd00::1234", ("fd00::1234", 0)),
    (":9001", ("", 9001)),
    ("[notanip]", ("[notanip]", 0)),
])
def test_split_host(header: str, expected: tuple[str, int]) -> None:
    assert f.split_host(header) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("sessionToken=abc123; Expires=Wed, 09 Jun 2021 10:18:14 GMT",
     {"sessiontoken": "abc123", "expires": "Wed, 09 Jun 2021 10:18:14 GMT"}),
    ("sessionToken=abc123; invalid", {"sessiontoken": "abc123"}),
    ("sessionToken=abc123; ", {"sessiontoken": "abc123"}),
    ("sessionToken=abc123;;;; ", {"sessiontoken": "abc123"}),
    ("sessionToken=abc123; multiple=a=d=2 ", {"sessiontoken": "abc123", "multiple": "a=d=2"}),
    ('sessionToken="abc123"; multiple="a=d=2 "', {"sessiontoken": "abc123", "multiple": "a=d=2 "}),
    ("sessionToken\t=   abc123; multiple=a=d=2 ", {"sessiontoken": "abc123", "multiple": "a=d=2"}),
    (";", {}),
    ("", {}),
])
def test_split_cookies(value: str, expected: dict[str, str]) -> None:
    assert f.split_cookies(value) == expected


@pytest.mark.parametrize(("value", "user"), [
    (b"Basic ZHVtbXk6NmQlc1AwOC1XemZ3Cg", "dummy"),  # no padding
    (b"Basic c2ltcGxlc2ltb246YWJjZDEyMys=", "simplesimon"),
    (b"basic c2ltcGxlc2ltb246YWJjZDEyMys=", "simplesimon"),
    (b"Basic bm9jb2xvbg==", ""),  # "nocolon"
    (b"Basic !!!!", ""),
    (b"Bearer abc.def", ""),
    (b"Basic", ""),
    (b"Basic Omhhc2hvbmx5", ""),  # ":hashonly": empty user
])
def test_basic_auth_user(value: bytes, user: str) -> None:
    assert f.basic_auth_user(value) == user


def test_query_parameters_like_go() -> None:
    pairs = f.parse_query(b"user=monica&pass=secret&a+b=c%20d&bad=%zz&semi=1;2&&=empty&x")
    assert pairs == [(b"user", b"monica"), (b"pass", b"secret"), (b"a b", b"c d"), (b"", b"empty"), (b"x", b"")]
    params = f.collect_params(pairs, frozenset({b"pass"}))
    assert f.encode_params(params) == b"=empty&a+b=c+d&pass=xxxxx&user=monica&x="
    assert f.query_escape(b"~a-b_c.d !*'()/?&=\xc3\xa9") == b"~a-b_c.d+%21%2A%27%28%29%2F%3F%26%3D%C3%A9"


def test_repeated_keys_keep_their_order() -> None:
    params = f.collect_params(f.parse_query(b"b=2&a=1&b=1"), frozenset())
    assert f.encode_params(params) == b"a=1&b=2&b=1"


def test_hidden_keywords_are_case_insensitive() -> None:
    params = f.collect_params(f.parse_query(b"password=a&Password=b&PASS=c&other=d"),
                              frozenset({b"password", b"pass"}))
    assert f.encode_params(params) == b"PASS=xxxxx&Password=xxxxx&other=d&password=xxxxx"
    assert f.censor_query(b"Password=b&x=1&pass", frozenset({b"password", b"pass"})) == \
        b"Password=xxxxx&x=1&pass=xxxxx"


@pytest.mark.parametrize(("uri", "path", "query"), [
    (b"/", b"/", b""),
    (b"/a%20b/c+d?x=1#frag", b"/a b/c+d", b"x=1"),
    (b"http://localhost:8080/test?password=two secret", b"/test", b"password=two secret"),
    (b"HTTP://host", b"", b""),
    (b"*", b"*", b""),
    (b"example.com:443", b"", b""),
    (b"//evil/path", b"/path", b""),
    (b"///triple", b"///triple", b""),
    (b"/bad%zzescape?q", b"/bad%zzescape", b"q"),
])
def test_split_target(uri: bytes, path: bytes, query: bytes) -> None:
    target = f.split_target(uri)
    assert (target.path, target.query) == (path, query)


@pytest.mark.parametrize(("host", "port", "path", "query", "full"), [
    ("elasticsearch", 80, b"/_cat/shards", b"", "http://elasticsearch/_cat/shards"),
    ("elasticsearch", 9200, b"/_cat/shards", b"", "http://elasticsearch:9200/_cat/shards"),
    ("127.0.0.1", 9200, b"/", b"", "http://127.0.0.1:9200/"),
    ("fd00::42", 80, b"/x", b"", "http://[fd00::42]/x"),
    ("::1", 9200, b"/x", b"", "http://[::1]:9200/x"),
    ("h", 80, b"/a b/(c)!?", b"q=1", "http://h/a%20b/%28c%29%21%3F?q=1"),
    ("h", 80, b"/\xc3\xa9t\xc3\xa9", b"", "http://h/%C3%A9t%C3%A9"),
    ("h", 80, b"rel", b"", "http://h/rel"),
    ("h", 80, b"*", b"", "http://h/*"),
])
def test_full_url(host: str, port: int, path: bytes, query: bytes, full: str) -> None:
    assert f.full_url(host, port, path, query) == full


@pytest.mark.parametrize(("path", "extension"), [
    ("/files.zip", "zip"), ("/files", ""), ("/a.b/c", ""), ("/archive.tar.gz", "gz"), ("/file.", ""), ("", ""),
])
def test_path_extension(path: str, extension: str) -> None:
    assert f.path_extension(path) == extension


# -- body decoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("encodings", "data"), [
    (("gzip",), m.GZIP_BODY),
    (("x-gzip",), m.GZIP_BODY),
    (("deflate",), m.DEFLATE_BODY),
    (("deflate",), zlib.compress(m.GZIP_PAYLOAD)),  # zlib-wrapped, as RFC 9110 means it
    (("deflate", "gzip"), m.GZIP_OF_DEFLATE),
    (("x-deflate", "identity", "gzip"), m.GZIP_OF_DEFLATE),
    (("gzip",), gzip.compress(b"hol") + gzip.compress(b"a\n")),  # two gzip members
])
def test_decode_body(encodings: tuple[str, ...], data: bytes) -> None:
    assert b.decode_body(data, encodings, 1 << 20) == (m.GZIP_PAYLOAD, None)


def test_decode_errors_read_like_packetbeat() -> None:
    assert b.decode_body(b"abc", ("sdch",), 100) == \
        (b"", "unable to decode body using sdch encoding: decoder not found")
    body, note = b.decode_body(m.GZIP_BODY[:-10], ("gzip",), 100)
    assert note == "unable to decode body using gzip encoding: unexpected EOF"
    assert m.GZIP_PAYLOAD.startswith(body)
    assert b.decode_body(b"not gzip at all", ("gzip",), 100)[1] == \
        "unable to decode body using gzip encoding: gzip: invalid header"
    # A failure in an inner coding keeps nothing (only the last coding's partial output is kept).
    assert b.decode_body(b"junk", ("identity", "gzip"), 100)[0] == b""


def test_decompression_is_bounded() -> None:
    bomb = gzip.compress(b"\0" * (10 << 20))
    body, note = b.decode_body(bomb, ("gzip",), 4096)
    assert len(body) == 4096
    assert note == "unable to decode body using gzip encoding: body truncated due to size limitation"
