"""Load pktbeat's kernel program on one interface and report what it produced (run inside a test namespace).

    ip netns exec NS python -m tests.helpers.kernel_probe --iface X [--port tcp:80] [--icmp] [--flows] \
        [--chunk N] [--snaplen N]

Prints READY once attached.  A line "ports tcp:80 udp:53" on stdin replaces
the kernel's port map while running (answered with OK).  When stdin closes,
it prints one JSON document:
every ring record (fields, payload hex, its chunk offset), the kernel
counters of the interface and the flow table, and removes its filters.
Tests use it to look below the agent: record splitting, counters, flows.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.capture import record  # noqa: E402
from agent.capture.devices import list_devices  # noqa: E402
from agent.capture.kernel import KernelProgram, KernelSettings  # noqa: E402
from agent.capture.kernel_flows import KernelFlowSource  # noqa: E402
from agent.capture.ring import RingReader  # noqa: E402
from agent.capture.tc import TcManager  # noqa: E402

PROTO = {"tcp": 6, "udp": 17}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iface", action="append", required=True)
    parser.add_argument("--port", action="append", default=[])
    parser.add_argument("--icmp", action="store_true")
    parser.add_argument("--flows", action="store_true")
    parser.add_argument("--chunk", type=int)
    parser.add_argument("--snaplen", type=int, default=65535)
    parser.add_argument("--ring-mb", type=int, default=4)
    args = parser.parse_args()
    ports = {}
    for spec in args.port:
        proto, _, port = spec.partition(":")
        ports[(PROTO[proto], int(port))] = 1
    ring_bytes = args.ring_mb * 1024 * 1024
    kernel = KernelProgram(KernelSettings(workers=1, ring_bytes=ring_bytes, icmp=args.icmp, flows=args.flows,
                                          ports=ports, snaplen=args.snaplen, chunk=args.chunk, max_flows=4096))
    tc = TcManager(kernel.ingress_fd, kernel.egress_fd)
    devices = {d.name: d for d in list_devices()}
    for name in args.iface:
        dev = devices[name]
        tc.attach(dev.index, name, ingress_only=dev.ingress_only)
        kernel.register_iface(dev.index, dev.link_len)
    reader = RingReader(kernel.ring_fds[0], ring_bytes)
    print("READY", flush=True)
    raw: list[bytes] = []
    pending = b""
    while True:  # keep the ring drained while traffic runs; stop when stdin closes
        raw.extend(reader.raw(100000))
        readable, _, _ = select.select([sys.stdin], [], [], 0.02)
        if not readable:
            continue
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            break
        pending += chunk
        while b"\n" in pending:  # "ports tcp:80 udp:53": replace the port map while running
            line, pending = pending.split(b"\n", 1)
            words = line.decode().split()
            if words and words[0] == "ports":
                kernel.set_ports({(PROTO[w.split(":")[0]], int(w.split(":")[1])): 1 for w in words[1:]})
                print("OK", flush=True)
    time.sleep(0.05)
    raw.extend(reader.raw(100000))
    tc.detach_all()
    records = []
    for rec in raw:
        pkt = record.decode_record(rec)
        records.append({
            "ts_ns": pkt.ts_ns, "ifindex": pkt.ifindex, "family": pkt.family, "l4proto": pkt.l4proto,
            "src": pkt.src.hex(), "dst": pkt.dst.hex(), "sport": pkt.sport, "dport": pkt.dport, "seq": pkt.seq,
            "tcp_flags": pkt.tcp_flags, "flags": pkt.flags, "missing": pkt.missing, "wire_len": pkt.wire_len,
            "direction": pkt.direction, "frag_id": pkt.frag_id, "frag_off": pkt.frag_off, "flow_hash": pkt.flow_hash,
            "payload_off": record.chunk_offset(rec), "payload": pkt.payload.hex(), "vlan": pkt.vlan,
        })
    counters = {}
    for ifindex, values in kernel.counters().items():
        counters[str(ifindex)] = dict(zip(record.COUNTER_NAMES, values, strict=True))
    flows = []
    if args.flows:
        for snap in KernelFlowSource(kernel.flow_map()).snapshot():
            key = snap.key
            flows.append({
                "family": key.family, "l4proto": key.l4proto, "addr_lo": key.addr_lo.hex(), "port_lo": key.port_lo,
                "addr_hi": key.addr_hi.hex(), "port_hi": key.port_hi, "source_is_lo": snap.source_is_lo,
                "source_packets": snap.source_packets, "dest_packets": snap.dest_packets,
                "source_bytes": snap.source_bytes, "dest_bytes": snap.dest_bytes, "tcp_flags": snap.tcp_flags,
                "first_ns": snap.first_ns, "last_ns": snap.last_ns, "source_mac": snap.source_mac.hex(),
                "dest_mac": snap.dest_mac.hex(), "icmp_type": snap.icmp_type, "vlan_outer": key.vlan_outer,
                "vlan_inner": key.vlan_inner,
            })
    json.dump({"records": records, "counters": counters, "flows": flows,
               "ifindex": {name: devices[name].index for name in args.iface}}, sys.stdout)
    sys.stdout.flush()
    kernel.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
