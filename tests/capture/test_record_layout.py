"""The Python side of the kernel/user-space contract matches bpf/record.h, checked by compiling the header."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from agent.capture import packet, record, tunnel

STRUCTS = {
    "pb_record": record.RECORD_FIELDS,
    "pb_iface": record.IFACE_FIELDS,
    "pb_settings": record.SETTINGS_FIELDS,
    "pb_port_key": record.PORT_KEY_FIELDS,
    "pb_flow_key": record.FLOW_KEY_FIELDS,
    "pb_flow": record.FLOW_VALUE_FIELDS,
}
HEADER = record.HEADER_FILE.read_text()


def _python_offsets(fields: tuple[tuple[str, str], ...]) -> tuple[dict[str, int], int]:
    offsets = {}
    at = 0
    for name, code in fields:
        offsets[name] = at
        at += struct.calcsize("<" + code)
    return offsets, at


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """sizeof/offsetof of every struct field, printed by a program compiled against record.h."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/types.h>", '#include "record.h"',
             "int main(void) {"]
    for struct_name, fields in STRUCTS.items():
        lines.append(f'printf("{struct_name} %zu\\n", sizeof(struct {struct_name}));')
        for field, _ in fields:
            lines.append(f'printf("{struct_name}.{field} %zu\\n", offsetof(struct {struct_name}, {field}));')
    lines.append('printf("PB_C_MAX %d\\n", (int)PB_C_MAX);')
    lines.append('printf("PB_RECORD_VERSION %d\\n", PB_RECORD_VERSION);')
    lines.append('printf("pb_counters %zu\\n", sizeof(struct pb_counters));')
    lines.append("return 0; }")
    work = tmp_path_factory.mktemp("layout")
    source = work / "layout.c"
    source.write_text("\n".join(lines))
    binary = work / "layout"
    subprocess.run([cc, "-Wall", "-Werror", "-I", str(record.BPF_DIR), "-o", str(binary), str(source)], check=True,
                   capture_output=True, timeout=60)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True, timeout=10).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("struct_name", list(STRUCTS))
def test_struct_matches_header(c_layout: dict[str, int], struct_name: str) -> None:
    offsets, size = _python_offsets(STRUCTS[struct_name])
    for field, offset in offsets.items():
        assert c_layout[f"{struct_name}.{field}"] == offset, f"{struct_name}.{field}"
    assert c_layout[struct_name] == size, f"sizeof(struct {struct_name}): C has padding Python does not"


def test_struct_objects_have_header_sizes(c_layout: dict[str, int]) -> None:
    assert record.RECORD_SIZE == c_layout["pb_record"] == 128
    assert record.FLOW_KEY.size == c_layout["pb_flow_key"]
    assert record.FLOW_VALUE.size == c_layout["pb_flow"]
    assert record.IFACE.size == c_layout["pb_iface"]
    assert record.SETTINGS.size == c_layout["pb_settings"]
    assert record.PORT_KEY.size == c_layout["pb_port_key"]
    assert record.COUNTERS.size == c_layout["pb_counters"]


def test_counter_names_follow_the_enum(c_layout: dict[str, int]) -> None:
    body = HEADER[HEADER.index("enum pb_counter"):]
    body = body[:body.index("};")]
    names = re.findall(r"^\s*PB_C_([A-Z0-9_]+)", body, re.M)
    assert names[-1] == "MAX"
    assert tuple(n.lower() for n in names[:-1]) == record.COUNTER_NAMES
    assert c_layout["PB_C_MAX"] == len(record.COUNTER_NAMES)
    outcomes = re.findall(r"PB_C_([A-Z0-9_]+),\s*/\* \[outcome\]", body)
    assert tuple(n.lower() for n in outcomes) == record.OUTCOME_COUNTERS
    assert set(record.DROP_COUNTERS) <= set(record.OUTCOME_COUNTERS)


def test_version_and_flags_match(c_layout: dict[str, int]) -> None:
    assert c_layout["PB_RECORD_VERSION"] == record.RECORD_VERSION
    defines = {m.group(1): int(m.group(2), 0) for m in re.finditer(r"#define (PB_F_\w+|PB_DIR_\w+)\s+(\w+)", HEADER)}
    assert defines["PB_F_TRUNCATED"] == packet.F_TRUNCATED
    assert defines["PB_F_FRAGMENT"] == packet.F_FRAGMENT
    assert defines["PB_F_MORE_FRAGS"] == packet.F_MORE_FRAGS
    assert defines["PB_F_LAST_CHUNK"] == packet.F_LAST_CHUNK
    assert defines["PB_F_L3_DEVICE"] == packet.F_L3_DEVICE
    assert defines["PB_F_VLAN"] == packet.F_VLAN
    assert defines["PB_F_TUNNEL"] == packet.F_TUNNEL
    assert defines["PB_DIR_INGRESS"] == packet.DIR_INGRESS
    assert defines["PB_DIR_EGRESS"] == packet.DIR_EGRESS
    kinds = {m.group(1).lower(): int(m.group(2)) for m in re.finditer(r"#define PB_TUN_(\w+)\s+(\d+)", HEADER)}
    assert kinds == {name: getattr(tunnel, f"KIND_{name.upper()}") for name in kinds}
    assert set(kinds.values()) == set(tunnel.KIND_NAMES)
    encap = re.search(r"#define PB_MAX_ENCAP (\d+)", HEADER)
    assert encap is not None and int(encap.group(1)) == tunnel.MAX_ENCAP <= 4  # 4 bits per layer in a u16
    ports = re.search(r"#define PB_MAX_TUNNEL_PORTS (\d+)", HEADER)
    assert ports is not None and int(ports.group(1)) == record.MAX_TUNNEL_PORTS
    chunk = re.search(r"#define PB_CHUNK (\d+)", HEADER)
    assert chunk is not None and int(chunk.group(1)) == record.DEFAULT_CHUNK
    snap = re.search(r"#define PB_MAX_SNAPLEN (\d+)", HEADER)
    assert snap is not None and int(snap.group(1)) == record.MAX_SNAPLEN


def test_decode_record_round_trip() -> None:
    pkt = packet.Packet(1_000, 4, packet.IPPROTO_TCP, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", 40000, 80,
                        b"GET / HTTP/1.1\r\n\r\n", seq=7, ack=9, tcp_flags=0x18, window=512, wire_len=84,
                        ifindex=3, direction=1, flow_hash=0xDEADBEEF, vlan=5, flags=packet.F_LAST_CHUNK | 0x20)
    raw = record.encode_record(pkt, payload_off=0)
    assert len(raw) == record.RECORD_SIZE + len(pkt.payload)
    back = record.decode_record(raw, ts_offset=5)
    assert (back.ts_ns, back.src, back.dst, back.sport, back.dport, back.seq, back.ack, back.tcp_flags,
            back.window, back.wire_len, back.ifindex, back.direction, back.flow_hash, back.vlan, back.flags,
            back.payload) == (1_005, pkt.src, pkt.dst, 40000, 80, 7, 9, 0x18, 512, 84, 3, 1, 0xDEADBEEF, 5,
                              pkt.flags, pkt.payload)
    assert record.chunk_offset(record.encode_record(pkt, payload_off=1234)) == 1234


def test_tunnel_fields_round_trip_and_only_with_the_flag() -> None:
    inner = packet.Packet(7, 4, packet.IPPROTO_TCP, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", 40000, 80, b"hi",
                          tunnel=tunnel.TunnelInfo(("gre", "vxlan"), 42, b"\xc0\x00\x02\x01", b"\xc0\x00\x02\x02"))
    raw = record.encode_record(inner)
    back = record.decode_record(raw)
    assert back.flags & packet.F_TUNNEL and back.tunnel == inner.tunnel
    assert back.tunnel.depth == 2 and back.tunnel.reversed().outer_src == b"\xc0\x00\x02\x02"
    assert raw[_offset("tunnel_kinds")] == tunnel.KIND_GRE | tunnel.KIND_VXLAN << 4
    pppoe = packet.Packet(7, 6, packet.IPPROTO_UDP, b"\x20" * 16, b"\x21" * 16, 1, 2, b"",
                          tunnel=tunnel.TunnelInfo(("pppoe",), 0x1234, b"", b""))
    assert record.decode_record(record.encode_record(pppoe)).tunnel == pppoe.tunnel
    # Without the flag, whatever the tail holds is not read.
    plain = bytearray(raw)
    plain[_offset("flags")] &= ~packet.F_TUNNEL
    assert record.decode_record(bytes(plain)).tunnel is None


def test_decode_record_sets_every_packet_slot() -> None:
    pkt = packet.Packet(0, 4, packet.IPPROTO_UDP, b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", 1, 2, b"x")
    back = record.decode_record(record.encode_record(pkt))
    for name in packet.PACKET_FIELDS:
        getattr(back, name)  # an unset attribute raises AttributeError


def test_decode_record_refuses_overrun_and_bad_family() -> None:
    pkt = packet.Packet(0, 6, packet.IPPROTO_UDP, b"\x20" * 16, b"\x21" * 16, 1, 2, b"x" * 10)
    raw = record.encode_record(pkt)
    with pytest.raises(record.RecordError):
        record.decode_record(raw, 0, len(raw) - 1)
    bad = bytearray(raw)
    bad[_offset("family")] = 9
    with pytest.raises(record.RecordError):
        record.decode_record(bytes(bad))


def _offset(name: str) -> int:
    offsets, _ = _python_offsets(record.RECORD_FIELDS)
    return offsets[name]


def test_program_includes_this_header() -> None:
    source = Path(record.PROGRAM_FILE).read_text()
    assert '#include "record.h"' in source
