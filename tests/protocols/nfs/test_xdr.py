"""The XDR cursor: Packetbeat's TestXdrDecoding and TestXdrDecodingFailures on the same bytes."""

from __future__ import annotations

import struct

import pytest

from agent.protocols.nfs.xdr import MAX_OPAQUE, MAX_VECTOR, Xdr, XdrError

MESSAGE = bytes([0x80, 0x00, 0x00, 0xE0, 0xB5, 0x49, 0x21, 0xAB]) + struct.pack("!Q", 2) + struct.pack("!I", 4) \
    + struct.pack("!I", 11) + b"test string\x00"


def test_decoding() -> None:
    xdr = Xdr(MESSAGE)
    assert xdr.uint() == 0x800000E0
    assert xdr.uint() == 0xB54921AB
    assert xdr.uhyper() == 2
    assert xdr.uint() == 4
    assert xdr.string() == "test string"
    assert xdr.size() == len(MESSAGE) and xdr.remaining == 0


@pytest.mark.parametrize("size", [1, 2, 3])
def test_short_uint(size: int) -> None:
    with pytest.raises(XdrError):
        Xdr(bytes([0x80, 0, 0])[:size]).uint()
    assert Xdr(bytes([0x80, 0, 0, 1])).uint() == 0x80000001


@pytest.mark.parametrize("size", range(1, 8))
def test_short_uhyper(size: int) -> None:
    data = bytes([0x80, 0, 0, 1, 0x80, 0, 0, 1])
    with pytest.raises(XdrError):
        Xdr(data[:size]).uhyper()
    assert Xdr(data).uhyper() == 0x8000000180000001


@pytest.mark.parametrize("size", range(1, 8))
def test_short_string_or_missing_padding(size: int) -> None:
    data = bytes([0, 0, 0, 3, 0x68, 0x69, 0x21, 0])
    with pytest.raises(XdrError):
        Xdr(data[:size]).string()
    assert Xdr(data).string() == "hi!"


def test_opaque_limits() -> None:
    with pytest.raises(XdrError):
        Xdr(bytes(MAX_OPAQUE + 1)).opaque(MAX_OPAQUE + 1)
    with pytest.raises(XdrError):
        Xdr(bytes(MAX_OPAQUE + 1)).opaque(-1)
    with pytest.raises(XdrError):
        Xdr(bytes(MAX_OPAQUE - 1)).opaque(MAX_OPAQUE)
    assert len(Xdr(bytes(MAX_OPAQUE)).opaque(MAX_OPAQUE)) == MAX_OPAQUE


@pytest.mark.parametrize("size", [1, 2, 3])
def test_opaque_without_its_padding(size: int) -> None:
    with pytest.raises(XdrError):
        Xdr(bytes([0x80, 0, 0])[:size]).opaque(1)
    assert Xdr(bytes([0x80, 0, 0, 0])).opaque(1) == b"\x80"


@pytest.mark.parametrize("size", range(1, 8))
def test_short_dynamic_opaque(size: int) -> None:
    data = bytes([0, 0, 0, 1, 8, 0, 0, 0])
    with pytest.raises(XdrError):
        Xdr(data[:size]).dynamic_opaque()
    assert Xdr(data).dynamic_opaque() == b"\x08"


def test_dynamic_opaque_length_over_the_limit_reads_nothing() -> None:
    xdr = Xdr(struct.pack("!I", 0xFFFFFFFF) + bytes(16))
    with pytest.raises(XdrError) as failure:
        xdr.dynamic_opaque()
    assert failure.value.offset == 4


def test_uint_vector_limits() -> None:
    values = list(range(MAX_VECTOR))
    data = struct.pack("!I", MAX_VECTOR) + struct.pack(f"!{MAX_VECTOR}I", *values)
    assert Xdr(data).uint_vector() == values
    with pytest.raises(XdrError):  # the length says more than the data holds
        Xdr(struct.pack("!I", MAX_VECTOR) + bytes((MAX_VECTOR - 1) * 4)).uint_vector()
    with pytest.raises(XdrError):  # over the limit, even with the data there
        Xdr(struct.pack("!I", MAX_VECTOR + 1) + bytes((MAX_VECTOR + 1) * 4)).uint_vector()


def test_skip() -> None:
    xdr = Xdr(bytes(8))
    xdr.skip(8)
    with pytest.raises(XdrError):
        xdr.skip(1)
