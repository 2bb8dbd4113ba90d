"""A live-mode publisher at a steady event rate, for acceptance test c and bench/output_es.py.

It builds the pipeline the live runner gets (`create_pipeline(config, output,
live=True)`) with the Elasticsearch output, publishes `--rate` events per
second for `--seconds`, calls `tick()` as the live runner does, samples its
own RSS, the spool size and the slowest publish() each second, then closes
with a deadline and writes a JSON report.  It runs as its own process so the
memory it reports is the publisher's alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.config.load import from_tree
from agent.outputs.elasticsearch import create
from agent.publisher.factory import create_pipeline
from agent.publisher.pipeline import PublishTimeout
from agent.publisher.types import EncodedEvent


def rss_kb() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class DropLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "dropped" in message:
            self.lines.append(message)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--data", required=True)
    parser.add_argument("--spool-max", type=int, default=0,
                        help="cap of the overflow spool in bytes (0: pktbeat's default)")
    parser.add_argument("--durable", action="store_true", help="queue.disk (every event spooled) instead")
    parser.add_argument("--report", required=True)
    parser.add_argument("--drop-interval", type=float, default=10.0)
    parser.add_argument("--close-timeout", type=float, default=120.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    drops = DropLines()
    logging.getLogger("pktbeat.publisher").addHandler(drops)
    tree = {"output": {"elasticsearch": {"hosts": [args.url], "backoff": {"init": "0.5s", "max": "2s"}}},
            "path": {"data": args.data, "logs": args.data},
            "queue": {"mem": {"events": 3200, "flush": {"min_events": 1600, "timeout": "1s"}}}}
    if args.durable:
        tree["queue"]["disk"] = {"max_size": args.spool_max or 10 * 1024**3}
    config = from_tree(tree)
    output = create(config.output.config, config)
    pipeline = create_pipeline(config, output, live=True)
    if args.spool_max and pipeline.spool is not None and not args.durable:
        pipeline.spool.max_size = args.spool_max
        pipeline.spool.segment_size = max(4096, args.spool_max // 10)
    pipeline.drop_log_interval = args.drop_interval
    samples: list[dict[str, float]] = []
    started = time.monotonic()
    next_sample = started
    next_tick = started
    published = 0
    slowest = 0.0
    slice_s = 0.01
    pad = "x" * 120
    while True:
        now = time.monotonic()
        elapsed = now - started
        if elapsed >= args.seconds:
            break
        due = int(elapsed * args.rate)
        while published < due:
            data = json.dumps({"@timestamp": "2024-05-06T07:08:09.000Z", "type": "flow",
                               "event": {"sequence": published}, "message": pad}).encode()
            t0 = time.perf_counter()
            pipeline.publish(EncodedEvent(data, f"live-{published}", None, "flow"))
            slowest = max(slowest, time.perf_counter() - t0)
            published += 1
        if now >= next_tick:
            pipeline.tick()
            next_tick = now + 0.1
        if now >= next_sample:
            spool = pipeline.spool
            samples.append({"t": round(elapsed, 2), "rss_kb": rss_kb(), "published": published,
                            "spool_bytes": spool.size if spool else 0, "spool_pending": spool.pending if spool else 0,
                            "dropped": pipeline.counters["queue_full_drops"], "acked": pipeline.counters["acked"],
                            "slowest_publish_s": round(slowest, 5)})
            slowest = 0.0
            next_sample = now + 1.0
        time.sleep(slice_s)
    closed_ok = True
    try:
        pipeline.close(time.monotonic() + args.close_timeout)
    except PublishTimeout:
        closed_ok = False
    report = {
        "published": published, "dropped": pipeline.counters["queue_full_drops"],
        "acked": pipeline.counters["acked"], "closed_ok": closed_ok, "samples": samples,
        "drop_log_lines": drops.lines, "spool_max": pipeline.spool.max_size if pipeline.spool else 0,
        "max_slowest_publish_s": max((s["slowest_publish_s"] for s in samples), default=0.0),
    }
    Path(args.report).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
