"""The Thrift IDL reader: services, methods, names by id, includes, and errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.typed import ConfigError
from agent.protocols.thrift import idl
from tests.helpers.sessions import protocol_config

IDL_DIR = Path(__file__).parent / "idl"


def test_packetbeat_idl_test(tmp_path: Path) -> None:
    path = tmp_path / "t.thrift"
    path.write_text("\n/* simple test */\nservice Test {\n       i32 add(1:i32 num1, 2: i32 num2)\n}\n")
    parsed = idl.load([str(path)])
    method = parsed.find_method("add")
    assert method is not None
    assert (method.service, method.name, method.params, method.exceptions) == ("Test", "add",
                                                                                {1: "num1", 2: "num2"}, {})


def test_tutorial_with_include_and_extends() -> None:
    parsed = idl.load([str(IDL_DIR / "tutorial.thrift")])
    assert parsed.extends == {"Calculator": "shared.SharedService"}
    assert [Path(f).name for f in parsed.files] == ["tutorial.thrift", "shared.thrift"]
    calculate = parsed.find_method("calculate")
    assert calculate is not None and calculate.exceptions == {1: "ouch"}
    assert calculate.params == {1: "logid", 2: "w"}
    get_struct = parsed.find_method("getStruct")
    assert get_struct is not None and get_struct.service == "SharedService"
    zip_ = parsed.find_method("zip")
    assert zip_ is not None and zip_.oneway and zip_.params == {}
    assert parsed.structs["Work"] == {1: "num1", 2: "num2", 3: "op", 4: "comment"}


def test_thrift_test_idl() -> None:
    parsed = idl.load([str(IDL_DIR / "ThriftTest.thrift")])
    assert {m.service for m in parsed.methods.values()} == {"ThriftTest", "SecondService"}
    multi = parsed.find_method("testMulti")
    assert multi is not None and multi.params[6] == "arg5"
    assert parsed.find_method("testOneway") is not None


def test_grammar_corners(tmp_path: Path) -> None:
    path = tmp_path / "corners.thrift"
    path.write_text("""
        # shell comment
        namespace * corners
        cpp_include "<string>"
        const list<map<string, i32>> BIG = [{"a": 1, 'b': -2}, {}];
        const double PI = 3.14e0
        typedef map<string, list<i64>> Index (cpp.template = "std::map")
        senum Old { "a", "b" }
        enum E { A = 0x1, B } (annotation = "x")
        union U { 1: string s; 2: binary b } // trailing comment
        struct S {
          1: required string a = "x" (js.name = "A"),
          optional i32 unnamed,
          3: set<i32> s,
        }
        service Base { void base() }
        service Svc extends Base {
          oneway void fire(1: S s),
          map<string, list<i32>> query(1: Index idx, -1: i32 odd) throws (7: S problem) (deprecated = "1");
          void nothing()
        }
    """)
    parsed = idl.load([str(path)])
    query = parsed.find_method("query")
    assert query is not None and query.params == {1: "idx"} and query.exceptions == {7: "problem"}
    assert parsed.structs["S"] == {1: "a", 3: "s"}  # a field without an id cannot be named from the wire
    assert parsed.services == {"Base": ["base"], "Svc": ["fire", "query", "nothing"]}


def test_method_in_two_services_first_wins(tmp_path: Path) -> None:
    path = tmp_path / "two.thrift"
    path.write_text("service A { void ping(1: i32 x) }\nservice B { void ping(1: i32 y) }\n")
    parsed = idl.load([str(path)])
    method = parsed.find_method("ping")
    assert method is not None and method.service == "A" and method.params == {1: "x"}
    assert parsed.warnings and "ping" in parsed.warnings[0]


@pytest.mark.parametrize(("text", "reason"), [
    ("service S { void f( }", "expected a name"),
    ("struct S { 1: i32 a ", "unexpected end of file"),
    ("include \"missing.thrift\"", "cannot read"),
    ("oops S {}", "unexpected 'oops'"),
    ("/* never closed", "unexpected character"),
    ("const i32 X = ", "unexpected end of file"),
])
def test_errors_name_file_and_line(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.thrift"
    path.write_text("\n" + text)
    with pytest.raises(idl.IdlError, match=reason) as info:
        idl.load([str(path)])
    assert str(path.parent) in str(info.value)


def test_limits(tmp_path: Path) -> None:
    big = tmp_path / "big.thrift"
    big.write_bytes(b" " * (idl.MAX_FILE_BYTES + 1))
    with pytest.raises(idl.IdlError, match="larger than"):
        idl.load([str(big)])
    deep = tmp_path / "deep.thrift"
    deep.write_text("const list<i32> X = " + "[" * (idl.MAX_NESTING + 5) + "]" * (idl.MAX_NESTING + 5))
    with pytest.raises(idl.IdlError, match="nested deeper"):
        idl.load([str(deep)])
    loop = tmp_path / "loop.thrift"
    loop.write_text('include "loop.thrift"\nservice L { void l() }')
    assert idl.load([str(loop)]).find_method("l") is not None  # a file includes itself: read once


def test_config_refuses_a_bad_idl(tmp_path: Path) -> None:
    path = tmp_path / "bad.thrift"
    path.write_text("service {")
    with pytest.raises(ConfigError, match="idl_files"):
        protocol_config("thrift", idl_files=[str(path)])
    with pytest.raises(ConfigError, match="transport type"):
        protocol_config("thrift", transport_type="http")
    with pytest.raises(ConfigError, match="protocol type"):
        protocol_config("thrift", protocol_type="compact")
