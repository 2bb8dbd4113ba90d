"""The NFS corpus pcaps through the CLI, with the fields Packetbeat's system tests check and more."""

from __future__ import annotations

import pytest

from tests.helpers.replay import corpus, replay

NFS = [{"type": "nfs", "ports": [2049]}]


def test_v3_lookup() -> None:
    (e,), _ = replay(corpus("nfs_v3.pcap"), NFS)
    assert (e["type"], e["status"], e["event"]["dataset"]) == ("nfs", "OK", "nfs")
    assert (e["network"]["transport"], e["network"]["protocol"]) == ("tcp", "nfsv3")
    assert e["nfs"] == {"version": 3, "opcode": "LOOKUP", "status": "NFSERR_NOENT"}
    assert e["rpc"]["auth_flavor"] == "unix" and e["rpc"]["xid"] == "a19a75d0" and e["rpc"]["status"] == "success"
    assert e["event"]["action"] == "nfs.LOOKUP" and e["event"]["duration"] == 409_242_000
    assert (e["source"]["bytes"], e["destination"]["bytes"], e["network"]["bytes"]) == (116, 32, 148)
    assert (e["source"]["port"], e["destination"]["port"]) == (839, 2049)
    assert e["source"]["domain"] == e["client"]["domain"] == "ani"
    assert (e["user"]["id"], e["group"]["id"], e["host"]["hostname"]) == (0, 0, "ani")
    assert e["network"]["community_id"].startswith("1:")


def test_v41_readdir() -> None:
    (e,), _ = replay(corpus("nfs_v4.pcap"), NFS)
    assert e["network"]["protocol"] == "nfsv4"
    assert e["nfs"] == {"version": 4, "minor_version": 1, "tag": "readdir", "opcode": "READDIR", "status": "NFS_OK"}
    assert (e["user"]["id"], e["group"]["id"]) == (500, 500)
    assert e["event"]["action"] == "nfs.READDIR" and e["event"]["duration"] > 0


@pytest.mark.parametrize(("pcap", "opcode", "status"), [
    ("nfs4_close.pcap", "CLOSE", "NFS_OK"),
    ("nfsv42_layoutstats.pcap", "LAYOUTSTATS", "NFSERR_OP_ILLEGAL"),
    ("nfsv42_clone.pcap", "CLONE", "NFSERR_NOTSUPP"),
])
def test_v4_first_class_operations(pcap: str, opcode: str, status: str) -> None:
    (e,), _ = replay(corpus(pcap), NFS)
    assert (e["nfs"]["opcode"], e["nfs"]["status"], e["event"]["action"]) == (opcode, status, f"nfs.{opcode}")
    assert e["nfs"]["version"] == 4 and e["status"] == "OK"


def test_rpc_fragment_on_another_port_does_not_crash() -> None:
    events, log = replay(corpus("rpc_fragment.pcap"), [{"type": "nfs", "ports": [12049]}])
    assert events == []
    assert "Traceback" not in log and "bug in" not in log
