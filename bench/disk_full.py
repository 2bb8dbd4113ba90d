"""Live capture through a 60 s disk-full episode (issue 15, acceptance b), then the space is freed.

    .venv/bin/python bench/disk_full.py [--full 60] [--rate 150] [--disk 32m] [--durable]

Runs as root.  An HTTP client in one namespace sends `--rate` requests per
second to a server in another; pktbeat captures it live with its default
output (the file output in `path.data`) and its overflow spool, both on one
tmpfs (`--durable`: with `queue.disk`, every event through the spool).  A
filler takes every free byte of the tmpfs for `--full` seconds, then is
deleted.  The report (JSON) says:

  requests        sent by the client (all answered)
  received        events the agent received from its capture workers
  delivered       distinct requests found in the output files
  duplicates      requests found more than once
  dropped         events the agent counted as dropped (by cause in `counters`)
  after_recovery_missing   requests sent 3 s or more after the space returned that are not in the output

Capture never stopping means received == requests; nothing lost silently
means delivered + dropped == received with no duplicates.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import delivery_live_disk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", type=float, default=60.0, help="seconds the disk stays full")
    parser.add_argument("--rate", type=float, default=150.0, help="HTTP requests per second")
    parser.add_argument("--disk", default="32m", help="tmpfs size (room for the whole run once freed)")
    parser.add_argument("--durable", action="store_true", help="queue.disk instead of the overflow spool")
    args = parser.parse_args()
    settings = {"queue.disk": {"max_size": "64MB"}} if args.durable else {}
    episode = delivery_live_disk.run(args.full, rate=args.rate, disk=args.disk, settings=settings)
    report = episode.summary()
    report["accounted"] = report["delivered"] + report["dropped"] == report["received"]
    report["counters"] = {k: v for k, v in sorted(episode.counters.items())
                          if k.startswith(("pipeline.", "spool.", "live.")) or "drop" in k}
    report["log_lines"] = [line[24:] for line in episode.log.splitlines()
                           if " WARNING " in line or " ERROR " in line][:20]
    print(json.dumps(report, indent=1))
    ok = (report["received"] == report["requests"] and report["accounted"] and not report["duplicates"]
          and not report["after_recovery_missing"] and not report["tracebacks"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
