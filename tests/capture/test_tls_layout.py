"""The Python side of TLS plaintext's records and counters matches bpf/tls.h, checked by compiling it;
the ring reader keeps plaintext records in their place among the packets."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess

import pytest

from agent.capture import tlsrecord

HEADER = tlsrecord.TLS_HEADER_FILE.read_text()
CONSTANTS = {"PB_TLS_F_LAST_CHUNK": tlsrecord.F_LAST_CHUNK, "PB_TLS_F_CLOSE": tlsrecord.F_CLOSE,
             "PB_TLS_ROLE_CLIENT": tlsrecord.ROLE_CLIENT, "PB_TLS_ROLE_SERVER": tlsrecord.ROLE_SERVER,
             "PB_TLS_SENT": tlsrecord.SENT, "PB_TLS_RECEIVED": tlsrecord.RECEIVED}


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/types.h>", '#include "tls.h"',
             "int main(void) {", 'printf("pb_tls_record %zu\\n", sizeof(struct pb_tls_record));']
    for field, _ in tlsrecord.TLS_RECORD_FIELDS:
        lines.append(f'printf("pb_tls_record.{field} %zu\\n", offsetof(struct pb_tls_record, {field}));')
    lines += ['printf("pb_tls_counters %zu\\n", sizeof(struct pb_tls_counters));',
              'printf("pb_tls_exec %zu\\n", sizeof(struct pb_tls_exec));',
              'printf("PB_TLS_MARKER %llu\\n", (unsigned long long)PB_TLS_MARKER);',
              'printf("PB_TLS_CHUNK %d\\nPB_TLS_MAX_CHUNKS %d\\n", PB_TLS_CHUNK, PB_TLS_MAX_CHUNKS);',
              *(f'printf("{name} %d\\n", {name});' for name in CONSTANTS),
              "return 0; }"]
    work = tmp_path_factory.mktemp("tlslayout")
    (work / "layout.c").write_text("\n".join(lines))
    subprocess.run([cc, "-Wall", "-Werror", "-I", str(tlsrecord.TLS_HEADER_FILE.parent), "-o", str(work / "layout"),
                    str(work / "layout.c")], check=True, capture_output=True, timeout=60)
    out = subprocess.run([str(work / "layout")], check=True, capture_output=True, text=True, timeout=10).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


def test_record_matches_header(c_layout: dict[str, int]) -> None:
    at = 0
    for field, code in tlsrecord.TLS_RECORD_FIELDS:
        assert c_layout[f"pb_tls_record.{field}"] == at, field
        at += struct.calcsize("<" + code)
    assert c_layout["pb_tls_record"] == at == tlsrecord.TLS_RECORD_SIZE == 88
    assert c_layout["pb_tls_exec"] == tlsrecord.TLS_EXEC.size
    assert c_layout["PB_TLS_MARKER"] == tlsrecord.TLS_MARKER
    assert (c_layout["PB_TLS_CHUNK"], c_layout["PB_TLS_MAX_CHUNKS"]) == (tlsrecord.CHUNK, tlsrecord.MAX_CHUNKS)


def test_constants_and_counters_follow_the_header(c_layout: dict[str, int]) -> None:
    for name, value in CONSTANTS.items():
        assert c_layout[name] == value, name
    body = HEADER[HEADER.index("enum pb_tls_counter"):]
    names = re.findall(r"PB_T_([A-Z_]+)", body[:body.index("PB_T_MAX")])
    assert tuple(n.lower() for n in names) == tlsrecord.TLS_COUNTER_NAMES
    assert c_layout["pb_tls_counters"] == tlsrecord.TLS_COUNTERS.size


def test_socket_and_plaintext_records_are_told_apart() -> None:
    from agent.capture.sockrecord import SOCK_MARKER

    assert tlsrecord.TLS_MARKER >> 63 == SOCK_MARKER >> 63 == 1
    plain = tlsrecord.encode_plaintext_record(tlsrecord.PlaintextRecord(
        1, 2, 3, 4, 4, b"\1\2\3\4", 5, b"\5\6\7\10", 443, tlsrecord.SENT, tlsrecord.ROLE_CLIENT, 0, b"x", 0, 1))
    assert tlsrecord.is_plaintext_record(plain, 0)
    assert not tlsrecord.is_plaintext_record(struct.pack("<Q", SOCK_MARKER), 0)
