"""A small reader of the kernel's BTF (/sys/kernel/btf/vmlinux): struct member offsets by name.

The kernel headers BCC compiles against may belong to another kernel than the
running one (on Debian 12 with a newer kernel they do), so the layout of
internal structs (task_struct, sock, cred, ...) must come from the running
kernel itself.  BTF describes every type of the kernel; this module reads the
type section once and answers `offset("task_struct", "tgid")`, following
anonymous structs and unions and dotted paths through embedded members
(`sock.__sk_common.skc_family`).  Pointers are not followed: a path names
bytes inside one object.

Format (Documentation/bpf/btf.rst): a header, then a type section of
variable-length records (12 bytes, then kind-specific data), then a string
section.  Type ids are the records' positions, starting at 1.  Only what
member lookup needs is decoded; every other kind is skipped by its size.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")

BTF_MAGIC = 0xEB9F
MAX_BTF_BYTES = 256 * 1024 * 1024  # refuse anything larger: not a kernel's BTF

# Kinds (include/uapi/linux/btf.h).
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD, KIND_TYPEDEF = range(1, 9)
KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC = range(9, 16)
KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = range(16, 20)

# Bytes of kind-specific data after the 12-byte common record: fixed, or per vlen item.
_FIXED_EXTRA = {KIND_INT: 4, KIND_ARRAY: 12, KIND_VAR: 4, KIND_DECL_TAG: 4}
_PER_ITEM = {KIND_STRUCT: 12, KIND_UNION: 12, KIND_ENUM: 8, KIND_FUNC_PROTO: 8, KIND_DATASEC: 12, KIND_ENUM64: 12}
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)

_header = struct.Struct("<HBBIIIII")
_type = struct.Struct("<III")
_member = struct.Struct("<III")


class BtfError(Exception):
    """BTF is missing, unreadable, malformed, or lacks a member that is needed."""


@dataclass(frozen=True, slots=True)
class Member:
    """Where a member lives inside its outermost struct."""

    offset: int  # bytes from the start of the struct
    size: int  # bytes of the member's type (0 when unsized, e.g. a flexible array)
    bit_offset: int = 0  # for bitfields: bits from `offset`
    bit_size: int = 0  # for bitfields: width in bits (0: not a bitfield)


class Btf:
    """The types of one BTF blob (struct and union members only)."""

    def __init__(self, data: bytes) -> None:
        if len(data) < _header.size:
            raise BtfError("BTF too short")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _header.unpack_from(data, 0)
        if magic != BTF_MAGIC:
            raise BtfError(f"not BTF (magic {magic:#x})")
        if version != 1:
            raise BtfError(f"BTF version {version} is not supported")
        types_at = hdr_len + type_off
        strings_at = hdr_len + str_off
        if types_at + type_len > len(data) or strings_at + str_len > len(data):
            raise BtfError("BTF sections run past the end of the data")
        self._strings = data[strings_at:strings_at + str_len]
        self._data = data
        # Per type id: (kind, name offset, size-or-type, kind_flag, vlen, where its extra data starts).
        self._kinds: list[int] = [0]
        self._names: list[int] = [0]
        self._size_type: list[int] = [0]
        self._flags: list[int] = [0]
        self._vlen: list[int] = [0]
        self._extra: list[int] = [0]
        self._by_name: dict[str, list[int]] = {}
        self._scan(types_at, types_at + type_len)

    @classmethod
    def load(cls, path: Path = VMLINUX) -> Btf:
        try:
            size = path.stat().st_size
            if size > MAX_BTF_BYTES:
                raise BtfError(f"{path}: {size} bytes is too large for BTF")
            return cls(path.read_bytes())
        except OSError as exc:
            raise BtfError(f"{path}: {exc.strerror or exc}") from None

    def _scan(self, at: int, end: int) -> None:
        data = self._data
        unpack = _type.unpack_from
        kinds, names, size_type, flags, vlens, extras = (self._kinds, self._names, self._size_type, self._flags,
                                                         self._vlen, self._extra)
        while at < end:
            if at + 12 > end:
                raise BtfError("truncated BTF type record")
            name_off, info, st = unpack(data, at)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            at += 12
            kinds.append(kind)
            names.append(name_off)
            size_type.append(st)
            flags.append(info >> 31)
            vlens.append(vlen)
            extras.append(at)
            if kind in _PER_ITEM:
                at += vlen * _PER_ITEM[kind]
            else:
                at += _FIXED_EXTRA.get(kind, 0)
            if kind in (KIND_STRUCT, KIND_UNION) and name_off:
                self._by_name.setdefault(self._name(name_off), []).append(len(kinds) - 1)
        if at != end:
            raise BtfError("BTF type section does not end on a record boundary")

    def _name(self, offset: int) -> str:
        end = self._strings.find(b"\0", offset)
        if end < 0:
            raise BtfError("BTF string runs past the string section")
        return self._strings[offset:end].decode("ascii", "replace")

    def _resolve(self, type_id: int) -> int:
        """Skip typedefs and qualifiers (bounded: a loop is malformed BTF)."""
        for _ in range(32):
            if type_id <= 0 or type_id >= len(self._kinds):
                raise BtfError(f"BTF type id {type_id} out of range")
            if self._kinds[type_id] not in _MODIFIERS:
                return type_id
            type_id = self._size_type[type_id]
        raise BtfError("BTF modifier chain too long")

    def _size(self, type_id: int) -> int:
        type_id = self._resolve(type_id)
        kind = self._kinds[type_id]
        if kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT):
            return self._size_type[type_id]
        if kind == KIND_PTR:
            return 8
        if kind == KIND_ARRAY:
            elem, _index, count = struct.unpack_from("<III", self._data, self._extra[type_id])
            return self._size(elem) * count
        return 0

    def struct_id(self, name: str) -> int:
        """The id of the complete struct (or union) named `name`."""
        for type_id in self._by_name.get(name, ()):
            if self._vlen[type_id] or self._size_type[type_id]:
                return type_id
        raise BtfError(f"struct {name} is not in the kernel's BTF")

    def _members(self, type_id: int) -> list[tuple[str, int, int, int]]:
        """(name, type id, bit offset, bitfield size) of each member."""
        out = []
        at = self._extra[type_id]
        bitfields = self._flags[type_id]
        for i in range(self._vlen[type_id]):
            name_off, member_type, offset = _member.unpack_from(self._data, at + 12 * i)
            bits = 0
            if bitfields:
                bits = offset >> 24
                offset &= 0xFFFFFF
            out.append((self._name(name_off) if name_off else "", member_type, offset, bits))
        return out

    def _find(self, type_id: int, name: str, depth: int = 0) -> tuple[int, int, int] | None:
        """(type id, bit offset, bitfield size) of member `name`, looking into anonymous members."""
        if depth > 8:
            return None
        for member_name, member_type, bit_off, bits in self._members(type_id):
            if member_name == name:
                return member_type, bit_off, bits
            if not member_name:
                inner = self._resolve(member_type)
                if self._kinds[inner] in (KIND_STRUCT, KIND_UNION):
                    found = self._find(inner, name, depth + 1)
                    if found is not None:
                        return found[0], bit_off + found[1], found[2]
        return None

    def member(self, struct_name: str, path: str) -> Member:
        """Where `path` (`a` or `a.b.c` through embedded structs) lies inside `struct struct_name`."""
        type_id = self.struct_id(struct_name)
        bit_total = 0
        bits = 0
        member_type = type_id
        for part in path.split("."):
            container = self._resolve(member_type)
            if self._kinds[container] not in (KIND_STRUCT, KIND_UNION):
                raise BtfError(f"{struct_name}.{path}: {part!r} is not inside a struct")
            found = self._find(container, part)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path}")
            member_type, bit_off, bits = found
            bit_total += bit_off
        if bits:
            return Member(bit_total // 8, self._size(member_type), bit_total % 8, bits)
        if bit_total % 8:
            raise BtfError(f"{struct_name}.{path} is not byte-aligned")
        return Member(bit_total // 8, self._size(member_type))

    def offset(self, struct_name: str, path: str) -> int:
        return self.member(struct_name, path).offset
