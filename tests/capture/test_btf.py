"""The BTF reader: member offsets through anonymous unions, nested paths and bitfields, on a BTF built here;
refusals of malformed BTF; and the running kernel's own BTF."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from agent.capture import btf
from agent.capture.btf import Btf, BtfError, Member


class _Builder:
    """A tiny BTF blob, type by type (ids start at 1)."""

    def __init__(self) -> None:
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def name(self, text: str) -> int:
        if not text:
            return 0
        at = len(self.strings)
        self.strings += text.encode() + b"\0"
        return at

    def _add(self, name: str, kind: int, vlen: int, size_type: int, extra: bytes = b"", kind_flag: int = 0) -> int:
        info = (kind_flag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.name(name), info, size_type) + extra
        self.count += 1
        return self.count

    def int_(self, name: str, size: int) -> int:
        return self._add(name, btf.KIND_INT, 0, size, struct.pack("<I", size * 8))

    def struct_(self, name: str, size: int, members: list[tuple[str, int, int]], union: bool = False,
                bitfields: bool = False) -> int:
        extra = b"".join(struct.pack("<III", self.name(n), t, off) for n, t, off in members)
        return self._add(name, btf.KIND_UNION if union else btf.KIND_STRUCT, len(members), size, extra,
                         int(bitfields))

    def typedef(self, name: str, target: int) -> int:
        return self._add(name, btf.KIND_TYPEDEF, 0, target)

    def ptr(self, target: int) -> int:
        return self._add("", btf.KIND_PTR, 0, target)

    def array(self, elem: int, count: int) -> int:
        return self._add("", btf.KIND_ARRAY, 0, 0, struct.pack("<III", elem, elem, count))

    def blob(self) -> bytes:
        header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        return header + self.types + self.strings


def _kernelish() -> bytes:
    b = _Builder()
    u8, u16, u32, u64 = b.int_("u8", 1), b.int_("u16", 2), b.int_("u32", 4), b.int_("u64", 8)
    be16 = b.typedef("__be16", u16)
    pair = b.struct_("", 8, [("daddr", u32, 0), ("saddr", u32, 32)])
    addrs = b.struct_("", 8, [("addrpair", u64, 0), ("", pair, 0)], union=True)  # anonymous union
    common = b.struct_("sock_common", 24, [("", addrs, 0), ("dport", be16, 64), ("num", u16, 80),
                                           ("family", u16, 128)])
    # A bitfield struct: 4-bit `kind` at bit 8, 12-bit `len` at bit 12 (size in the high byte of offset).
    flags = b.struct_("flags", 4, [("lo", u8, 0), ("kind", u32, (4 << 24) | 8), ("len", u32, (12 << 24) | 12)],
                      bitfields=True)
    comm = b.array(u8, 16)
    b.struct_("sock", 64, [("__sk_common", common, 0), ("sk_flags", flags, 192), ("protocol", u16, 224),
                           ("owner", b.ptr(common), 256), ("comm", comm, 320)])
    b.struct_("sock", 0, [])  # a forward-like empty duplicate: the complete one must win
    return b.blob()


def test_offsets_through_anonymous_members_and_paths() -> None:
    reader = Btf(_kernelish())
    assert reader.member("sock_common", "daddr") == Member(0, 4)
    assert reader.member("sock_common", "saddr") == Member(4, 4)
    assert reader.member("sock_common", "dport") == Member(8, 2)  # through a typedef
    assert reader.member("sock", "__sk_common.family") == Member(16, 2)
    assert reader.member("sock", "protocol") == Member(28, 2)
    assert reader.member("sock", "owner") == Member(32, 8)
    assert reader.member("sock", "comm") == Member(40, 16)
    assert reader.member("sock", "sk_flags.kind") == Member(25, 4, 0, 4)
    assert reader.member("sock", "sk_flags.len") == Member(25, 4, 4, 12)


def test_missing_members_and_malformed_blobs_are_errors() -> None:
    reader = Btf(_kernelish())
    with pytest.raises(BtfError, match="no member"):
        reader.member("sock", "sk_nope")
    with pytest.raises(BtfError, match="not inside a struct"):
        reader.member("sock", "protocol.inner")
    with pytest.raises(BtfError, match="not in the kernel's BTF"):
        reader.member("task_struct", "tgid")
    blob = _kernelish()
    with pytest.raises(BtfError, match="magic"):
        Btf(b"\0\0" + blob[2:])
    with pytest.raises(BtfError, match="past the end"):
        Btf(blob[:-10])
    with pytest.raises(BtfError, match="too short"):
        Btf(blob[:10])
    cut = bytearray(blob)
    struct.pack_into("<I", cut, 12, struct.unpack_from("<I", cut, 12)[0] - 4)  # type_len no longer on a boundary
    with pytest.raises(BtfError):
        Btf(bytes(cut))
    with pytest.raises(BtfError, match="No such file"):
        Btf.load(Path("/nonexistent/vmlinux"))


@pytest.mark.skipif(not btf.VMLINUX.exists(), reason="this kernel has no BTF")
def test_the_running_kernels_btf() -> None:
    reader = Btf.load()
    tgid = reader.member("task_struct", "tgid")
    assert tgid.size == 4 and reader.offset("task_struct", "pid") + 4 == tgid.offset
    assert reader.offset("sock", "__sk_common") == 0
    assert reader.member("task_struct", "comm").size == 16
    assert reader.member("sock_common", "skc_v6_daddr").size == 16
