"""A small Thrift IDL reader: what Packetbeat needs from `idl_files`, nothing generated.

It reads services (with `extends`), their functions, the functions'
parameter and exception field names by id, `oneway`, and the structs,
unions and exceptions; it parses and ignores namespaces, consts, typedefs,
enums and annotations.  `include "x.thrift"` is followed relative to the
including file, as the Thrift compiler does.

Methods are looked up by name alone, as Packetbeat does: the wire carries
only the method name.  When two services define the same name, the first
one read wins and the clash is reported in `Idl.warnings`.

Bounded: files over `MAX_FILE_BYTES`, more than `MAX_FILES` files, includes
nested deeper than `MAX_INCLUDE_DEPTH`, or values nested deeper than
`MAX_NESTING` are errors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

MAX_FILE_BYTES = 4 << 20
MAX_FILES = 64
MAX_INCLUDE_DEPTH = 16
MAX_NESTING = 64


class IdlError(Exception):
    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IdlMethod:
    service: str
    name: str
    params: dict[int, str]  # field id -> parameter name
    exceptions: dict[int, str]  # field id -> name in `throws (...)`
    oneway: bool = False


@dataclass
class Idl:
    services: dict[str, list[str]] = field(default_factory=dict)  # service -> its own method names
    extends: dict[str, str] = field(default_factory=dict)
    structs: dict[str, dict[int, str]] = field(default_factory=dict)  # struct/union/exception -> names by id
    methods: dict[str, IdlMethod] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def find_method(self, name: str) -> IdlMethod | None:
        return self.methods.get(name)


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>//[^\n]*|\#[^\n]*|/\*.*?\*/)
  | (?P<string>"[^"]*"|'[^']*')
  | (?P<number>[+-]?(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}()<>\[\],;:=*])
""", re.VERBOSE | re.DOTALL)

_SEPARATORS = frozenset((",", ";"))
_CONTAINER_TYPES = frozenset(("map", "set", "list"))


class _Tokens:
    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.items: list[tuple[str, str, int]] = []  # (kind, text, line)
        line = 1
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise IdlError(path, line, f"unexpected character {text[pos]!r}")
            kind = match.lastgroup or ""
            value = match.group()
            if kind not in ("space", "comment"):
                self.items.append((kind, value, line))
            line += value.count("\n")
            pos = match.end()
        self.index = 0

    def peek(self, ahead: int = 0) -> str:
        at = self.index + ahead
        return self.items[at][1] if at < len(self.items) else ""

    def kind(self) -> str:
        return self.items[self.index][0] if self.index < len(self.items) else ""

    @property
    def line(self) -> int:
        if self.index < len(self.items):
            return self.items[self.index][2]
        return self.items[-1][2] if self.items else 0

    def error(self, reason: str) -> IdlError:
        return IdlError(self.path, self.line, reason)

    def next(self) -> str:
        if self.index >= len(self.items):
            raise self.error("unexpected end of file")
        value = self.items[self.index][1]
        self.index += 1
        return value

    def expect(self, text: str) -> None:
        found = self.next()
        if found != text:
            self.index -= 1
            raise self.error(f"expected {text!r}, found {found!r}")

    def accept(self, text: str) -> bool:
        if self.peek() == text:
            self.index += 1
            return True
        return False

    def ident(self) -> str:
        if self.done:
            raise self.error("unexpected end of file")
        if self.kind() != "ident":
            raise self.error(f"expected a name, found {self.peek()!r}")
        return self.next()

    def literal(self) -> str:
        if self.done:
            raise self.error("unexpected end of file")
        if self.kind() != "string":
            raise self.error(f"expected a string literal, found {self.peek()!r}")
        return self.next()[1:-1]

    def separator(self) -> None:
        if self.peek() in _SEPARATORS:
            self.index += 1

    @property
    def done(self) -> bool:
        return self.index >= len(self.items)


def load(paths: list[str] | tuple[str, ...]) -> Idl:
    """Read `paths` (and what they include) into one method table."""
    idl = Idl()
    seen: set[str] = set()
    for path in paths:
        _load_file(idl, path, seen, 0)
    return idl


def parse_text(text: str, path: str = "<idl>") -> Idl:
    """Read one IDL document given as text (includes are resolved against the working directory)."""
    idl = Idl()
    _parse(idl, text, path, set(), 0)
    return idl


def _load_file(idl: Idl, path: str, seen: set[str], depth: int) -> None:
    real = os.path.realpath(path)
    if real in seen:
        return
    if len(seen) >= MAX_FILES:
        raise IdlError(path, 0, f"more than {MAX_FILES} IDL files")
    seen.add(real)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise IdlError(path, 0, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise IdlError(path, 0, f"larger than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IdlError(path, 0, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    idl.files.append(path)
    _parse(idl, text, path, seen, depth)


def _parse(idl: Idl, text: str, path: str, seen: set[str], depth: int) -> None:
    tokens = _Tokens(text, path)
    while not tokens.done:
        word = tokens.next()
        if word == "include":
            target = tokens.literal()
            if depth >= MAX_INCLUDE_DEPTH:
                raise tokens.error(f"includes nested deeper than {MAX_INCLUDE_DEPTH}")
            _load_file(idl, os.path.join(os.path.dirname(path), target), seen, depth + 1)
        elif word == "cpp_include":
            tokens.literal()
        elif word == "namespace" or word.endswith("_namespace"):
            if word == "namespace":
                tokens.next()  # scope (or *)
            tokens.next()  # name (an identifier, or a literal for the old forms)
            _annotations(tokens)
        elif word == "const":
            _type(tokens)
            tokens.ident()
            tokens.expect("=")
            _value(tokens, 0)
            tokens.separator()
        elif word == "typedef":
            _type(tokens)
            tokens.ident()
            _annotations(tokens)
            tokens.separator()
        elif word in ("enum", "senum"):
            tokens.ident()
            _skip_block(tokens)
            _annotations(tokens)
        elif word in ("struct", "union", "exception"):
            name = tokens.ident()
            tokens.accept("xsd_all")
            tokens.expect("{")
            idl.structs.setdefault(name, _fields(tokens, "}"))
            _annotations(tokens)
        elif word == "service":
            _service(idl, tokens)
        else:
            tokens.index -= 1
            raise tokens.error(f"unexpected {word!r}")


def _service(idl: Idl, tokens: _Tokens) -> None:
    name = tokens.ident()
    if tokens.accept("extends"):
        idl.extends[name] = tokens.ident()
    tokens.expect("{")
    own = idl.services.setdefault(name, [])
    while not tokens.accept("}"):
        oneway = tokens.accept("oneway") or tokens.accept("async")
        if not tokens.accept("void"):
            _type(tokens)
        method = tokens.ident()
        tokens.expect("(")
        params = _fields(tokens, ")")
        exceptions: dict[int, str] = {}
        if tokens.accept("throws"):
            tokens.expect("(")
            exceptions = _fields(tokens, ")")
        _annotations(tokens)
        tokens.separator()
        own.append(method)
        previous = idl.methods.get(method)
        if previous is not None:
            idl.warnings.append(f"method {method} is defined in services {previous.service} and {name}; "
                                f"{previous.service} is used")
            continue
        idl.methods[method] = IdlMethod(name, method, params, exceptions, oneway)


def _fields(tokens: _Tokens, closing: str) -> dict[int, str]:
    """Fields up to `closing`: names by id (fields without an explicit id cannot be named on the wire)."""
    out: dict[int, str] = {}
    while not tokens.accept(closing):
        fid: int | None = None
        if tokens.kind() == "number" and tokens.peek(1) == ":":
            fid = _int(tokens, tokens.next())
            tokens.expect(":")
        tokens.accept("required") or tokens.accept("optional")
        _type(tokens)
        name = tokens.ident()
        if tokens.accept("="):
            _value(tokens, 0)
        while tokens.peek() in ("xsd_optional", "xsd_nillable"):
            tokens.next()
        if tokens.accept("xsd_attrs"):
            tokens.expect("{")
            _fields(tokens, "}")
        _annotations(tokens)
        tokens.separator()
        if fid is not None and 0 <= fid <= 0xFFFF:
            out.setdefault(fid, name)
    return out


def _int(tokens: _Tokens, text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise tokens.error(f"expected an integer field id, found {text!r}") from None


def _type(tokens: _Tokens, depth: int = 0) -> None:
    if depth > MAX_NESTING:
        raise tokens.error(f"types nested deeper than {MAX_NESTING}")
    word = tokens.ident()
    if word in _CONTAINER_TYPES:
        if tokens.accept("cpp_type"):
            tokens.literal()
        tokens.expect("<")
        _type(tokens, depth + 1)
        if word == "map":
            tokens.expect(",")
            _type(tokens, depth + 1)
        tokens.expect(">")
        if tokens.accept("cpp_type"):
            tokens.literal()
    _annotations(tokens)


def _annotations(tokens: _Tokens) -> None:
    if tokens.peek() != "(":
        return
    tokens.next()
    while not tokens.accept(")"):
        tokens.ident()
        if tokens.accept("="):
            tokens.literal()
        tokens.separator()


def _value(tokens: _Tokens, depth: int) -> None:
    if depth > MAX_NESTING:
        raise tokens.error(f"values nested deeper than {MAX_NESTING}")
    if tokens.accept("["):
        while not tokens.accept("]"):
            _value(tokens, depth + 1)
            tokens.separator()
    elif tokens.accept("{"):
        while not tokens.accept("}"):
            _value(tokens, depth + 1)
            tokens.expect(":")
            _value(tokens, depth + 1)
            tokens.separator()
    elif tokens.kind() in ("number", "string", "ident"):
        tokens.next()
    elif tokens.done:
        raise tokens.error("unexpected end of file")
    else:
        raise tokens.error(f"expected a value, found {tokens.peek()!r}")


def _skip_block(tokens: _Tokens) -> None:
    tokens.expect("{")
    level = 1
    while level:
        word = tokens.next()
        if word == "{":
            level += 1
        elif word == "}":
            level -= 1
