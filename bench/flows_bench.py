"""Packets per second through the user-space flow table (file replay), and report cost.

Feeds pre-built Packets (as the pcap decoder makes them, with link info) for
a mix of TCP conversations, DNS over UDP and pings spread over `--flows`
concurrent flows, then reports them all.  Bounded by `--packets` and
`--seconds`.  Usage:

    .venv/bin/python bench/flows_bench.py [--packets 1000000] [--flows 5000] [--seconds 30] [--max-flows 65536]

Prints packets/s for the per-packet path, flow events/s for the final
report, and the table counters.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.capture.packet import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, LinkInfo, Packet
from agent.config.model import FlowsConfig
from agent.config.typed import build
from agent.flows.table import FlowTable

MAC_C = bytes.fromhex("020000000001")
MAC_S = bytes.fromhex("020000000002")


def make_packets(count: int, flows: int, seed: int) -> list[Packet]:
    rng = random.Random(seed)
    out: list[Packet] = []
    up = LinkInfo(MAC_C, MAC_S, (), None)
    down = LinkInfo(MAC_S, MAC_C, (), None)
    convs = []
    for i in range(flows):
        client = bytes((10, 1, (i >> 8) & 0xFF, i & 0xFF))
        server = bytes((10, 2, 0, 1 + i % 50))
        kind = rng.random()
        if kind < 0.8:
            convs.append((IPPROTO_TCP, client, server, 30000 + i % 30000, 80, b""))
        elif kind < 0.95:
            convs.append((IPPROTO_UDP, client, server, 40000 + i % 20000, 53, b"q"))
        else:
            convs.append((IPPROTO_ICMP, client, server, 0, 0, b"\x08\x00\x00\x00\x00\x01\x00\x01"))
    ts = 1_700_000_000_000_000_000
    for _ in range(count):
        proto, client, server, cport, sport, payload = convs[rng.randrange(flows)]
        ts += 10_000
        if rng.random() < 0.5:
            out.append(Packet(ts, 4, proto, client, server, cport, sport, payload, wire_len=100, link=up))
        else:
            reply = b"\x00\x00\x00\x00\x00\x01\x00\x01" if proto == IPPROTO_ICMP else payload
            out.append(Packet(ts, 4, proto, server, client, sport, cport, reply, wire_len=1500, link=down))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--flows", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=30.0, help="stop feeding after this long")
    parser.add_argument("--max-flows", type=int, default=65536)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    packets = make_packets(args.packets, args.flows, args.seed)
    gc.collect()
    gc.freeze()  # the pre-built packets would otherwise make every collection walk millions of objects
    events: list[dict[str, object]] = []
    config = build(FlowsConfig, {"timeout": "30s", "period": "-1s", "max_flows": args.max_flows},
                   "packetbeat.flows")
    table = FlowTable(config, events.append)
    feed = table.packet
    deadline = time.perf_counter() + args.seconds
    fed = 0
    start = time.perf_counter()
    batch = 10_000
    for i in range(0, len(packets), batch):
        for pkt in packets[i:i + batch]:
            feed(pkt)
        fed = min(i + batch, len(packets))
        if time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - start
    live = len(table.source)
    report_start = time.perf_counter()
    table.final(packets[fed - 1].ts_ns)
    report_elapsed = time.perf_counter() - report_start

    counted = sum(int(e["network"]["packets"]) for e in events)  # type: ignore[index, call-overload]
    print(f"packets fed:        {fed}")
    print(f"flow table:         {fed / elapsed:,.0f} packets/s ({elapsed * 1e9 / fed:.0f} ns/packet)")
    print(f"flows at end:       {live} (max_flows {args.max_flows})")
    print(f"final report:       {len(events)} events in {report_elapsed:.3f} s "
          f"({len(events) / report_elapsed if report_elapsed else 0:,.0f} events/s)")
    print(f"table counters:     {dict(table.source.stats)}")
    if counted != fed:
        print(f"ERROR: flows counted {counted} packets, fed {fed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
