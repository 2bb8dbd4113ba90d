"""Building the pipeline the runners use from an AgentConfig.

`create_pipeline(config, output, live)`:
  - `queue.disk` configured: a durable spool at `queue.disk.path` (default
    `<path.data>/diskqueue`) that every event goes through, in both modes.
  - live without `queue.disk`: an overflow spool at `<path.data>/spool`,
    capped at OVERFLOW_SPOOL_MAX (pktbeat's choice; Packetbeat has no
    overflow spool), used only when the memory queue is full.
  - replay without `queue.disk`: the memory queue alone; publish() blocks
    while it is full.
Backoff comes from the output's `backoff.init` / `backoff.max` (an output
object may cap it with a `backoff_max` attribute: the file output retries a
full disk every second); an output preset (balanced, throughput, ...) sets the memory queue as Packetbeat's do.
"""

from __future__ import annotations

import os

from agent.config.load import AgentConfig
from agent.config.model import DiskQueueConfig
from agent.publisher.pipeline import Pipeline
from agent.publisher.spool import Spool
from agent.publisher.types import Output, OutputError

OVERFLOW_SPOOL_MAX = 1024**3


def create_pipeline(config: AgentConfig, output: Output, live: bool) -> Pipeline:
    mem = config.queue.mem
    events, min_events, timeout = mem.events, mem.flush.min_events, mem.flush.timeout
    out_cfg = config.output.config
    preset = getattr(out_cfg, "preset", "custom")
    if preset and preset != "custom":
        from agent.outputs.elasticsearch.config import PRESET_QUEUE

        events, min_events, timeout = PRESET_QUEUE.get(preset, (events, min_events, timeout))
    backoff = getattr(out_cfg, "backoff", None)
    bulk = getattr(out_cfg, "bulk_max_size", 0) or min_events or 1600
    spool = None
    disk = config.queue.disk
    if disk is not None:
        spool = _spool(disk, disk.path or os.path.join(config.path.data, "diskqueue"), disk.max_size)
    elif live:
        spool = _spool(DiskQueueConfig(), os.path.join(config.path.data, "spool"), OVERFLOW_SPOOL_MAX)
    backoff_max = getattr(backoff, "max", 60.0)
    cap = getattr(output, "backoff_max", None)
    if isinstance(cap, (int, float)) and cap > 0:
        backoff_max = min(backoff_max, cap)
    backoff_init = min(getattr(backoff, "init", 1.0), backoff_max)
    return Pipeline(
        output, max_events=events, flush_min_events=min_events, flush_timeout=timeout, bulk_max_size=bulk,
        live=live, spool=spool, durable=disk is not None, backoff_init=backoff_init, backoff_max=backoff_max,
    )


def _spool(disk: DiskQueueConfig, path: str, max_size: int) -> Spool:
    from agent.publisher.spool import SpoolError

    try:
        return Spool(path, max_size, segment_size=disk.segment_size, write_ahead=disk.write_ahead)
    except SpoolError as exc:
        raise OutputError(f"queue.disk.path: {exc}") from None
