"""Benchmark: events/s the Elasticsearch output sustains to the stand-in, and memory during an outage.

    .venv/bin/python bench/output_es.py [--events 100000] [--outage 20] [--rate 2000]

1. Throughput: N real-shaped events (a pktbeat ICMP event, ~900 bytes of
   JSON) through the replay pipeline and the Elasticsearch output to the
   stand-in (its own process), for a few output settings.  The stand-in is
   Python too and parses every document, so these are lower bounds for a
   real cluster.
2. Outage: the live publisher (tests/outputs/live_driver.py) at a steady
   rate while the stand-in refuses connections; prints its RSS, the spool
   size and the drops each few seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.config.typed import build  # noqa: E402
from agent.outputs.elasticsearch.config import ElasticsearchOutputConfig  # noqa: E402
from agent.outputs.elasticsearch.output import ElasticsearchOutput  # noqa: E402
from agent.publisher.pipeline import Pipeline  # noqa: E402
from agent.publisher.types import EncodedEvent  # noqa: E402
from tests.es_standin.harness import StandinProcess  # noqa: E402

SAMPLE = {
    "@timestamp": "2023-11-14T22:13:20.000Z", "type": "icmp", "status": "OK",
    "event": {"kind": "event", "category": ["network"], "type": ["connection"], "dataset": "icmp",
              "start": "2023-11-14T22:13:20.000Z", "end": "2023-11-14T22:13:20.000Z", "duration": 200000},
    "source": {"ip": "10.1.0.1", "bytes": 27}, "destination": {"ip": "10.1.0.2", "bytes": 27},
    "client": {"ip": "10.1.0.1", "bytes": 27}, "server": {"ip": "10.1.0.2", "bytes": 27},
    "network": {"type": "ipv4", "transport": "icmp", "protocol": "icmp", "bytes": 54,
                "community_id": "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "direction": "unknown"},
    "icmp": {"version": 4, "request": {"type": 8, "code": 0, "message": "EchoRequest"},
             "response": {"type": 0, "code": 0, "message": "EchoReply"}},
    "path": "10.1.0.2", "related": {"ip": ["10.1.0.1", "10.1.0.2"]},
    "agent": {"type": "packetbeat", "name": "bench", "version": "0.9.0", "id": "5d6c0f8e-0000-4000-8000-000000000000",
              "ephemeral_id": "8d8a3b33-0000-4000-8000-000000000000"},
    "ecs": {"version": "8.0.0"}, "host": {"name": "bench"},
}


def events(count: int) -> list[EncodedEvent]:
    out = []
    for i in range(count):
        doc = dict(SAMPLE, event={**SAMPLE["event"], "sequence": i})  # type: ignore[dict-item]
        data = json.dumps(doc, separators=(",", ":")).encode()
        out.append(EncodedEvent(data, f"bench-{i:09d}", None, "icmp"))
    return out


def throughput(count: int, settings: dict[str, object]) -> tuple[float, int]:
    standin = StandinProcess("8.15.3")
    try:
        config = build(ElasticsearchOutputConfig, {"hosts": [standin.url], **settings}, "output.elasticsearch")
        output = ElasticsearchOutput(config)
        batch = events(count)
        pipe = Pipeline(output, max_events=3200, flush_min_events=1600, flush_timeout=1.0,
                        bulk_max_size=config.bulk_max_size)
        started = time.perf_counter()
        for event in batch:
            pipe.publish(event)
        pipe.close(time.monotonic() + 600)
        elapsed = time.perf_counter() - started
        stored = int(standin.stats()["documents"])
        return count / elapsed, stored
    finally:
        standin.stop()


def outage(seconds: float, rate: int, spool_bytes: int) -> None:
    standin = StandinProcess("8.15.3")
    warmup, after = 3.0, 5.0
    try:
        standin.faults(("ok", warmup), ("refuse", seconds))
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.json"
            subprocess.run([sys.executable, str(ROOT / "tests" / "outputs" / "live_driver.py"), "--url", standin.url,
                            "--rate", str(rate), "--seconds", str(warmup + seconds + after), "--data", tmp,
                            "--spool-max", str(spool_bytes), "--report", str(report)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            result = json.loads(report.read_text())
        step = max(1, int(len(result["samples"]) / 12))
        print(f"  {'t(s)':>6} {'phase':<8} {'RSS MB':>7} {'spool MB':>9} {'dropped':>8} {'acked':>8} "
              f"{'slowest publish ms':>19}")
        for sample in result["samples"][::step]:
            phase = "outage" if warmup <= sample["t"] < warmup + seconds else "ok"
            print(f"  {sample['t']:6.1f} {phase:<8} {sample['rss_kb'] / 1024:7.1f} "
                  f"{sample['spool_bytes'] / 1e6:9.2f} {sample['dropped']:8d} {sample['acked']:8d} "
                  f"{sample['slowest_publish_s'] * 1000:19.2f}")
        rss = [s["rss_kb"] / 1024 for s in result["samples"] if warmup + 1 <= s["t"] < warmup + seconds]
        print(f"  published {result['published']}, dropped {result['dropped']} (spool cap {spool_bytes / 1e6:.1f} MB),"
              f" stored {standin.stats()['documents']}; RSS during the outage {min(rss):.1f}..{max(rss):.1f} MB")
    finally:
        standin.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--outage", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=2000, help="live events/s during the outage run")
    parser.add_argument("--spool-mb", type=float, default=5.0)
    args = parser.parse_args()
    print(f"Throughput to the stand-in ({args.events} events, ~{len(events(1)[0].data)} B each):")
    for label, settings in (("bulk 1600, 1 worker, gzip", {}),
                            ("bulk 1600, 1 worker, no compression", {"compression_level": 0}),
                            ("bulk 1600, 2 workers, gzip", {"worker": 2}),
                            ("bulk 400, 1 worker, gzip", {"bulk_max_size": 400})):
        rate, stored = throughput(args.events, settings)
        print(f"  {label:<38} {rate:10,.0f} events/s  (stored {stored})")
    print(f"\nLive publisher at {args.rate} events/s, stand-in refusing connections for {args.outage:.0f}s:")
    outage(args.outage, args.rate, int(args.spool_mb * 1e6))


if __name__ == "__main__":
    main()
