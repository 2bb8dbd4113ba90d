"""HTTP replay speed, stage by stage, in one process on one core.

    .venv/bin/python bench/http_replay.py [--pcap FILE] [--packets 133000] [--runs 3]

Without --pcap, bench/gen_traffic_pcap.py writes its deterministic HTTP + DNS
capture to /tmp/pktbeat-bench-<packets>.pcap first (only port 80 is
configured here, so DNS packets cost a decode and a port lookup).  Stages,
each timed on the same packets already read into memory (best of --runs):

  decode     link/IP/TCP decoding only
  transport  + TCP connection table and reassembly, feeding sessions that ignore their bytes
  http       + the HTTP sessions instead (framing, correlation, fields; transactions counted)
  events     + Packetbeat's event built for every transaction and JSON-encoded

It prints packets/s and transactions/s per stage (CPU time of this process,
so other work on a shared machine does not inflate it), and the HTTP share in
microseconds per transaction.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent import metrics  # noqa: E402
from agent.capture.decode import FrameDecoder  # noqa: E402
from agent.capture.pcapfile import CaptureReader  # noqa: E402
from agent.config.typed import build  # noqa: E402
from agent.events.builder import AgentIdentity, EventBuilder  # noqa: E402
from agent.events.direction import DirectionClassifier  # noqa: E402
from agent.protocols.base import SessionContext, Transaction  # noqa: E402
from agent.protocols.http.plugin import HttpConfig, HttpSession  # noqa: E402
from agent.runtime.wiring import tune_gc  # noqa: E402
from agent.transport.dispatcher import Dispatcher  # noqa: E402
from agent.transport.session import StreamBinding, StreamSession  # noqa: E402
from agent.transport.tcp import NullSession  # noqa: E402
from agent.transport.types import ConnectionInfo  # noqa: E402


def load(pcap: Path) -> tuple[int, list[tuple[int, bytes, int]]]:
    with CaptureReader(pcap) as reader:
        return reader.info.linktype, list(reader)


def run(linktype: int, frames: list[tuple[int, bytes, int]], stage: str, options: dict[str, Any]) -> tuple[float, int]:
    decoder = FrameDecoder(linktype)
    decode = decoder.decode
    config = build(HttpConfig, {"ports": [80], **options}, "packetbeat.protocols.http")
    counters = metrics.register("bench.http")
    count = 0
    builder = EventBuilder(AgentIdentity.create("bench"), DirectionClassifier(frozenset(), []))

    def emit(txn: Transaction) -> None:
        nonlocal count
        count += 1
        if stage == "events":
            event = builder.transaction_event(txn)
            if event is not None:
                builder.encode(event)

    def new_session(info: ConnectionInfo) -> StreamSession:
        if stage == "transport":
            return NullSession()
        return HttpSession(SessionContext("http", config, info, emit, counters))

    dispatcher = Dispatcher({80: StreamBinding("http", 10 * 10**9, new_session)}, {})
    handle = dispatcher.handle
    last = 0
    tune_gc()  # as the replay runner does
    start = time.process_time()
    if stage == "decode":
        for ts, frame, wire_len in frames:
            decode(frame, ts, wire_len)
    else:
        for ts, frame, wire_len in frames:
            pkt = decode(frame, ts, wire_len)
            if pkt is not None:
                handle(pkt)
            last = ts
        dispatcher.close_all(last)
    return time.process_time() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pcap", type=Path)
    parser.add_argument("--packets", type=int, default=133_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--send-all-headers", action="store_true", help="export every header (more work per event)")
    args = parser.parse_args()
    pcap = args.pcap
    if pcap is None:
        from bench.gen_traffic_pcap import generate

        pcap = Path(f"/tmp/pktbeat-bench-{args.packets}.pcap")
        if not pcap.exists():
            generate(pcap, args.packets, 1)
    linktype, frames = load(pcap)
    options = {"send_all_headers": True} if args.send_all_headers else {}
    print(f"{pcap}: {len(frames)} packets, {pcap.stat().st_size / 1e6:.1f} MB")
    best: dict[str, tuple[float, int]] = {}
    for stage in ("decode", "transport", "http", "events"):
        runs = [run(linktype, frames, stage, options) for _ in range(max(1, args.runs))]
        best[stage] = min(runs)
        seconds, txns = best[stage]
        rate = f"{txns / seconds:>10,.0f} transactions/s" if txns else ""
        print(f"{stage:<10} {seconds:7.3f} s  {len(frames) / seconds:>10,.0f} packets/s  {rate}")
    http_share = (best["http"][0] - best["transport"][0]) / max(1, best["http"][1]) * 1e6
    events_share = (best["events"][0] - best["http"][0]) / max(1, best["events"][1]) * 1e6
    print(f"HTTP sessions: {http_share:.1f} us/transaction (request + response framed, paired, fields built); "
          f"event build + JSON: {events_share:.1f} us/transaction")


if __name__ == "__main__":
    main()
