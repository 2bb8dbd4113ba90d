"""The Python side of process attribution's records and maps matches bpf/sockets.h, checked by compiling it;
socket records decode, and round-trip through the encoder tests use."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess

import pytest

from agent.capture import sockrecord
from agent.capture.sockrecord import SocketOwner, SockRecordError, TaskFacts

STRUCTS = {
    "pb_task": sockrecord.TASK_FIELDS,
    "pb_sock_record": sockrecord.SOCK_RECORD_FIELDS,
    "pb_exec_text": sockrecord.EXEC_TEXT_FIELDS,
    "pb_owner_key": sockrecord.OWNER_KEY_FIELDS,
}
HEADER = sockrecord.SOCK_HEADER_FILE.read_text()


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/types.h>", '#include "sockets.h"',
             "int main(void) {"]
    for name, fields in STRUCTS.items():
        lines.append(f'printf("{name} %zu\\n", sizeof(struct {name}));')
        for field, _ in fields:
            lines.append(f'printf("{name}.{field} %zu\\n", offsetof(struct {name}, {field}));')
    lines += ['printf("pb_sock_counters %zu\\n", sizeof(struct pb_sock_counters));',
              'printf("PB_S_MAX %d\\n", (int)PB_S_MAX);',
              'printf("PB_SOCK_MARKER %llu\\n", (unsigned long long)PB_SOCK_MARKER);',
              'printf("PB_EXE_LEN %d\\nPB_ARGS_LEN %d\\nPB_COMM_LEN %d\\n", PB_EXE_LEN, PB_ARGS_LEN, PB_COMM_LEN);',
              "return 0; }"]
    work = tmp_path_factory.mktemp("socklayout")
    source = work / "layout.c"
    source.write_text("\n".join(lines))
    binary = work / "layout"
    subprocess.run([cc, "-Wall", "-Werror", "-I", str(sockrecord.SOCK_HEADER_FILE.parent), "-o", str(binary),
                    str(source)], check=True, capture_output=True, timeout=60)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True, timeout=10).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("struct_name", list(STRUCTS))
def test_struct_matches_header(c_layout: dict[str, int], struct_name: str) -> None:
    at = 0
    for field, code in STRUCTS[struct_name]:
        assert c_layout[f"{struct_name}.{field}"] == at, f"{struct_name}.{field}"
        at += struct.calcsize("<" + code)
    assert c_layout[struct_name] == at, f"sizeof(struct {struct_name}): C has padding Python does not"


def test_constants_and_counters_follow_the_header(c_layout: dict[str, int]) -> None:
    assert c_layout["pb_sock_record"] == sockrecord.SOCK_RECORD_SIZE
    assert sockrecord.TASK.size == c_layout["pb_task"]
    assert sockrecord.EXEC_TEXT.size == c_layout["pb_exec_text"]
    assert sockrecord.OWNER_KEY.size == c_layout["pb_owner_key"]
    assert c_layout["PB_SOCK_MARKER"] == sockrecord.SOCK_MARKER and sockrecord.SOCK_MARKER >> 63
    lengths = (c_layout["PB_EXE_LEN"], c_layout["PB_ARGS_LEN"], c_layout["PB_COMM_LEN"])
    assert lengths == (sockrecord.EXE_LEN, sockrecord.ARGS_LEN, sockrecord.COMM_LEN)
    assert c_layout["PB_S_MAX"] == len(sockrecord.SOCK_COUNTER_NAMES)
    assert sockrecord.SOCK_COUNTERS.size == c_layout["pb_sock_counters"]
    enum = HEADER[HEADER.index("enum pb_sock_counter"):]
    names = re.findall(r"PB_S_([A-Z_]+)\s*[,=]", enum[:enum.index("PB_S_MAX")])
    assert [n.lower() for n in names] == list(sockrecord.SOCK_COUNTER_NAMES)


TASK = TaskFacts(tgid=4242, tid=4243, ppid=1, uid=1000, gid=1000, start_ns=5_000_000_000,
                 parent_start_ns=1_000_000, netns=4026531840, comm="curl", exe="/usr/bin/curl",
                 args=("curl", "-s", "http://x/"))


def test_socket_records_round_trip() -> None:
    owner = SocketOwner(123, 4, 6, b"\x0a\0\0\x01", 40000, b"\x0a\0\0\x02", 80, sockrecord.HOW_CONNECT, TASK)
    raw = sockrecord.encode_socket_record(owner, sockrecord.EXEC_OWN)
    assert sockrecord.is_socket_record(raw, 0)
    assert len(raw) == sockrecord.SOCK_RECORD_SIZE + sockrecord.EXEC_TEXT.size
    assert sockrecord.decode_socket_record(raw) == owner._replace(exec_flags=sockrecord.EXEC_OWN)
    lazy = sockrecord.decode_socket_record(raw, with_exec=False)  # a reader that knows the process
    assert lazy.task.exe == "" and sockrecord.with_exec_text(lazy.task, raw, 0, lazy.exec_flags) == TASK
    bare = sockrecord.encode_socket_record(owner)  # without exec text: exe and args unknown
    decoded = sockrecord.decode_socket_record(bare)
    assert (decoded.task.exe, decoded.task.args, decoded.task.comm) == ("", (), "curl")
    v6 = SocketOwner(1, 6, 17, b"\xfd" + b"\0" * 15, 53, b"\0" * 16, 0, sockrecord.HOW_IO, TASK)
    assert sockrecord.decode_socket_record(sockrecord.encode_socket_record(v6, sockrecord.EXEC_OWN)).task == TASK


def test_malformed_socket_records_are_refused() -> None:
    owner = SocketOwner(1, 4, 6, b"\1\2\3\4", 1, b"\5\6\7\x08", 2, sockrecord.HOW_IO, TASK)
    raw = bytearray(sockrecord.encode_socket_record(owner, sockrecord.EXEC_OWN))
    with pytest.raises(SockRecordError, match="expected at least"):
        sockrecord.decode_socket_record(bytes(raw[:40]))
    with pytest.raises(SockRecordError, match="exec text"):
        sockrecord.decode_socket_record(bytes(raw[:sockrecord.SOCK_RECORD_SIZE + 10]))
    wrong_version = bytearray(raw)
    wrong_version[4] = 9
    with pytest.raises(SockRecordError, match="version"):
        sockrecord.decode_socket_record(bytes(wrong_version))
    family_at = struct.calcsize("<QQ" + sockrecord.TASK.format[1:] + "HH")
    raw[family_at] = 7
    with pytest.raises(SockRecordError, match="family 7"):
        sockrecord.decode_socket_record(bytes(raw))
    # A packet record starts with a boot-time stamp: never taken for a socket record.
    assert not sockrecord.is_socket_record(struct.pack("<Q", 10**18), 0)
