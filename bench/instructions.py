"""Instructions pktbeat spends per workload, counted by callgrind: the stable measure of parser speed.

    .venv/bin/python bench/instructions.py [--only NAME[,NAME...]] [--copies 40] [--packets 20000]

Wall times on a shared 2-core machine vary by ±20%; instruction counts do not.
Each workload is a pcap replayed by `pktbeat run -t -I pcap` (output: discard)
under `valgrind --tool=callgrind`; the instructions of the same run on an
empty capture (start-up, imports, shutdown) are subtracted, so the number is
what the packets cost.  Workloads:

  http_dns  bench/gen_traffic_pcap.py's HTTP + DNS capture (--packets packets)
  mysql, pgsql, redis, mongodb, memcache, amqp, cassandra, thrift
            the application bytes of the connections in a few corpus captures, written back
            --copies times as new connections (each with its own handshake, MSS-sized
            segments and FIN)

PKTBEAT_PURE_PYTHON=1 counts the plain Python modules instead of the native
(mypyc) build.  `--python` and `--root` run another checkout's agent (for a
before/after comparison: the interpreter of a venv whose native build matches
that checkout, e.g. one made with `python3 -m venv --system-site-packages`, a
.pth line naming this venv's site-packages, and `scripts/accel.py build` run
from the checkout).  Runs use PYTHONHASHSEED=0, so a count repeats exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gen_traffic_pcap import TcpConn, Writer, generate  # noqa: E402
from bench.replay_bench import ISSUE_BODY_MU  # noqa: E402

CORPUS = Path(os.environ.get("PKTBEAT_SHARED", "/work/shared")) / "corpus" / "beats"

# workload -> (protocol, the port it is written with, the corpus captures whose connections are copied with
# the server port they use there)
SESSIONS: dict[str, tuple[str, int, tuple[tuple[str, int], ...]]] = {
    "mysql": ("mysql", 3306, (("mysql_int_string_operations.pcap", 13001), ("mysql_long.pcap", 3306),
                              ("mysql_long_result.pcap", 3306), ("mysql_prepare_statement.pcap", 3307))),
    "pgsql": ("pgsql", 5432, (("pgsql_rt.pcap", 5432), ("pgsql_long_result.pcap", 5432),
                              ("pgsql_extended_query.pcap", 5432), ("pgsql_request_response.pcap", 5432))),
    "redis": ("redis", 6379, (("redis_session.pcap", 6380),)),
    "mongodb": ("mongodb", 27017, (("mongodb_more_rows.pcap", 27017), ("mongo_3.0_session.pcap", 27017),
                                   ("mongodb_inserts.pcap", 27017))),
    "memcache": ("memcache", 11211, (("memcache_text_tcp_multi_store_load.pcap", 11211),
                                     ("memcache_bin_tcp_multi_store_load.pcap", 11211))),
    "amqp": ("amqp", 5672, (("amqp_publish.pcap", 5672), ("amqp_emit_receive.pcap", 5672))),
    "cassandra": ("cassandra", 9042, (("cassandra_mixed_frame.pcap", 9042), ("cassandra_insert.pcap", 9042))),
    "thrift": ("thrift", 9090, (("thrift_integration.pcap", 9090),)),
}


def conversation(pcap: Path, port: int) -> list[tuple[bool, bytes]]:
    """The in-order application bytes of every TCP connection to `port`: (from client, data) steps."""
    from agent.capture.decode import FrameDecoder
    from agent.capture.pcapfile import CaptureReader

    flows: dict[tuple[bytes, int], list[tuple[int, bool, bytes]]] = defaultdict(list)
    with CaptureReader(pcap) as reader:
        decoder = FrameDecoder(reader.info.linktype)
        for ts, frame, wire in reader:
            pkt = decoder.decode(frame, ts, wire)
            if pkt is None or pkt.l4proto != 6 or not pkt.payload or port not in (pkt.sport, pkt.dport):
                continue
            to_server = pkt.dport == port
            client = (pkt.src, pkt.sport) if to_server else (pkt.dst, pkt.dport)
            flows[client].append((pkt.seq, to_server, pkt.payload))
    steps: list[tuple[bool, bytes]] = []
    for segments in flows.values():
        seen: set[tuple[bool, int]] = set()
        for seq, to_server, payload in segments:  # capture order; drop retransmissions
            if (to_server, seq) in seen:
                continue
            seen.add((to_server, seq))
            if steps and steps[-1][0] == to_server:
                steps[-1] = (to_server, steps[-1][1] + payload)
            else:
                steps.append((to_server, payload))
    return steps


def session_pcap(path: Path, name: str, copies: int) -> None:
    _, port, pcaps = SESSIONS[name]
    conversations = [conversation(CORPUS / pcap, pcap_port) for pcap, pcap_port in pcaps]
    rng = random.Random(1)
    writer = Writer(path)
    client_port = 20000
    for i in range(copies):
        for steps in conversations:
            client_port += 1
            conn = TcpConn(writer, bytes([10, 3, i >> 8 & 0xFF, i & 0xFF | 1]), client_port, bytes([10, 1, 0, 9]),
                           port, rng)
            conn.open()
            for from_client, data in steps:
                conn.send(from_client, data)
            conn.close()
    writer.close()


def config(directory: Path, name: str) -> Path:
    if name == "http_dns":
        protocols = [{"type": "http", "ports": [80]}, {"type": "dns", "ports": [53]}]
    else:
        protocol, port, _ = SESSIONS[name]
        protocols = [{"type": protocol, "ports": [port]}]
    path = directory / f"{name}.yml"
    path.write_text(json.dumps({"packetbeat.protocols": protocols, "output": {"discard": {}},
                                "logging.level": "warning"}))
    return path


def instructions(python: str, root: Path, cfg: Path, pcap: Path, directory: Path) -> int:
    out = directory / "callgrind.out"
    code = "import sys; from agent.cli.main import main; sys.argv[0] = 'pktbeat'; sys.exit(main())"
    # A fixed hash seed: string hashing otherwise moves the count by about 0.5% from run to run.
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "0"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    args = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python, "-c", code,
            "run", "-t", "-c", str(cfg), "-I", str(pcap)]
    subprocess.run(args[3:], cwd=directory, env=env, capture_output=True, check=True)  # bytecode cache
    proc = subprocess.run(args, cwd=directory, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{pcap.name}: {proc.stderr[-2000:]}")
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if found is None:
        raise SystemExit(f"no callgrind total in: {proc.stderr[-1000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only")
    parser.add_argument("--copies", type=int, default=40)
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args()
    names = ["http_dns", *SESSIONS]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    mode = "pure Python" if os.environ.get("PKTBEAT_PURE_PYTHON") else "native build when it matches"
    print(f"agent: {args.root} ({mode}); instructions per workload, start-up subtracted")
    with tempfile.TemporaryDirectory(prefix="pktbeat-instr-") as tmp:
        directory = Path(tmp)
        for name in names:
            pcap = directory / f"{name}.pcap"
            if name == "http_dns":
                generate(pcap, args.packets, seed=1, body_mu=ISSUE_BODY_MU)
            else:
                session_pcap(pcap, name, args.copies)
            with open(pcap, "rb") as handle:
                header = handle.read(24)
            empty = directory / "empty.pcap"
            empty.write_bytes(header)
            cfg = config(directory, name)
            total = instructions(args.python, args.root, cfg, pcap, directory)
            base = instructions(args.python, args.root, cfg, empty, directory)
            packets = (pcap.stat().st_size - 24) and sum(1 for _ in _frames(pcap))
            print(f"{name:10} {total - base:>14,} instructions  {packets:>7} packets  "
                  f"{(total - base) / max(packets, 1):>9,.0f} per packet", flush=True)


def _frames(pcap: Path):  # type: ignore[no-untyped-def]
    with open(pcap, "rb") as handle:
        handle.read(24)
        while header := handle.read(16):
            size = struct.unpack("<IIII", header)[2]
            handle.seek(size, 1)
            yield size


if __name__ == "__main__":
    main()
