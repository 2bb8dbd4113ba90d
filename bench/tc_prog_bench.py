"""Kernel cost per packet of the TC program, by frame shape, now and at a git revision (not a test).

    sudo .venv/bin/python bench/tc_prog_bench.py [--baseline REV] [--repeat 20000] [--rounds 7]

The program (bpf/pktbeat.bpf.c of the worktree, and of REV when given) runs
on crafted frames with BPF_PROG_TEST_RUN, which runs it `--repeat` times in
the kernel and reports the mean time per run; the table shows the median of
`--rounds` such means per frame shape, in ns.  The test-run harness itself
(skb allocation) is part of every number, so differences between shapes and
revisions are what count.  Shapes: plain TCP to a configured port (a record
is written) and to an unconfigured one (flows only), UDP unconfigured, and
the configured TCP packet inside GRE (key, sequence), VXLAN, GENEVE,
IP-in-IP, PPPoE and VXLAN-in-GRE.  Flows are on, as with the default config.
"""

from __future__ import annotations

import argparse
import ctypes as ct
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.capture.bpfmap import BpfMap, possible_cpus  # noqa: E402
from agent.capture.ring import RingReader  # noqa: E402
from tests.helpers import encap  # noqa: E402
from tests.helpers.progrun import test_run  # noqa: E402

RING_BYTES = 1 << 24
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
IN_A, IN_B = bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2))
OUT_A, OUT_B = bytes((192, 0, 2, 1)), bytes((192, 0, 2, 2))


def _tcp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 0x50, 0x18, 1000, 0, 0) + payload


def frames() -> dict[str, bytes]:
    http = encap.ipv4(IN_A, IN_B, 6, _tcp(40000, 80, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    other = encap.ipv4(IN_A, IN_B, 6, _tcp(40000, 9999, b"x" * 28))
    udp = encap.ipv4(IN_A, IN_B, 17, encap.udp(IN_A, IN_B, 40000, 9998, b"x" * 28))

    def eth(packet: bytes, ethertype: int = encap.ETH_P_IP) -> bytes:
        return encap.ethernet(MAC_B, MAC_A, ethertype, packet)

    def vxlan(packet: bytes) -> bytes:
        return encap.ipv4(OUT_A, OUT_B, 17, encap.udp(OUT_A, OUT_B, 50000, 4789, encap.vxlan(eth(packet), 42)))

    return {
        "tcp configured": eth(http),
        "tcp other port": eth(other),
        "udp other port": eth(udp),
        "gre key+seq": eth(encap.ipv4(OUT_A, OUT_B, 47, encap.gre(encap.ETH_P_IP, http, key=7, seq=1))),
        "vxlan": eth(vxlan(http)),
        "geneve": eth(encap.ipv4(OUT_A, OUT_B, 17, encap.udp(
            OUT_A, OUT_B, 50000, 6081, encap.geneve(eth(http), 42, options=encap.GENEVE_OPTION)))),
        "ip-in-ip": eth(encap.ipv4(OUT_A, OUT_B, 4, http)),
        "pppoe": eth(encap.pppoe_session(http, 7), encap.ETH_P_PPP_SES),
        "vxlan in gre": eth(encap.ipv4(OUT_A, OUT_B, 47, encap.gre(encap.ETH_P_IP, vxlan(http)))),
    }


class Program:
    """One build of the program, loaded with BCC, its maps set as the agent would (HTTP on port 80, flows on)."""

    def __init__(self, bpf_dir: Path) -> None:
        from bcc import BPF

        page = 4096
        cflags = [f"-I{bpf_dir}", "-DPB_WORKERS=1", f"-DPB_RING_PAGES={RING_BYTES // page}", "-DPB_MAX_FLOWS=65536",
                  f"-DPB_NCPUS={possible_cpus()}", "-DPB_MAX_IFACES=256", "-w"]
        self.bpf = BPF(src_file=str(bpf_dir / "pktbeat.bpf.c").encode(), cflags=cflags)
        self.ingress = self.bpf.load_func(b"pb_ingress", BPF.SCHED_CLS)
        self.bpf.get_table("emitters")[ct.c_int(0)] = ct.c_int(self.bpf.load_func(b"pb_emit", BPF.SCHED_CLS).fd)
        if b"pb_decap" in (bpf_dir / "pktbeat.bpf.c").read_bytes():
            decap = self.bpf.load_func(b"pb_decap", BPF.SCHED_CLS)
            self.bpf.get_table("decappers")[ct.c_int(0)] = ct.c_int(decap.fd)
        settings = self.bpf.get_table("settings")
        size = ct.sizeof(settings.Leaf)
        value = struct.pack("<IIBBB", 65535, 64, 0, 1, 1)  # snaplen, wake_every, icmp, flows, decap
        if size > 16:  # tunnel ports follow the padding
            value = value.ljust(16, b"\0") + struct.pack("<8H8H", 4789, 8472, *[0] * 6, 6081, *[0] * 7)
        BpfMap("settings", settings.get_fd(), 4, size, 1).update(b"\0\0\0\0", value[:size].ljust(size, b"\0"))
        ports = self.bpf.get_table("ports")
        BpfMap("ports", ports.get_fd(), 4, 4, 4096).update(struct.pack("<BBH", 6, 0, 80), struct.pack("<I", 1))
        self.ring = RingReader(self.bpf.get_table("ring0").get_fd(), RING_BYTES)

    def cost(self, frame: bytes, repeat: int, rounds: int) -> float:
        means = []
        for _ in range(rounds):
            means.append(test_run(self.ingress.fd, frame, repeat)[1])
            while self.ring.raw(100_000):  # keep the ring from filling: a full ring costs less
                pass
        return statistics.median(means)


def checkout(rev: str, into: Path) -> Path:
    for name in ("pktbeat.bpf.c", "record.h"):
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:bpf/{name}"], check=True, capture_output=True,
                              text=True).stdout
        (into / name).write_text(text)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="git revision to compare with")
    parser.add_argument("--repeat", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    builds = {"worktree": ROOT / "bpf"}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            builds = {args.baseline: checkout(args.baseline, Path(tmp)), **builds}
        programs = {name: Program(path) for name, path in builds.items()}
        shapes = frames()
        print(f"{'frame':<16}" + "".join(f"{name:>14}" for name in programs) + "   (ns per run, median of means)")
        for shape, frame in shapes.items():
            costs = [program.cost(frame, args.repeat, args.rounds) for program in programs.values()]
            print(f"{shape:<16}" + "".join(f"{c:>14.0f}" for c in costs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
