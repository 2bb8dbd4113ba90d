"""`/metrics`: the agent's counters in Prometheus' text format, made by `prometheus_client`.

A scrape reads the same sources as `/stats` (a flat dict of dotted counters: kernel, workers,
pipeline, protocols, whatever a module registered in agent/metrics.py), plus the kernel counters
per interface, a few gauges and the processes' RSS and CPU.  The named metrics the operator asks
for come first; every other counter is exported generically as `pktbeat_<dotted_name>_total`
(a name declared with `metrics.declare_gauge` as a gauge, without `_total`), so a counter
someone registers later shows up without a change here.

Named metrics:

- `pktbeat_kernel_packets_total{interface,counter}`  seen, matched, sent, emitted, not_ip, ...
- `pktbeat_kernel_drops_total{interface,cause}`      ring_full, load_failed, emit_failed
- `pktbeat_kernel_bytes_total{interface}`, `pktbeat_kernel_flows_total{interface,counter}`
- `pktbeat_events_total{protocol,status}`           published events by type and status
- `pktbeat_parse_errors_total{protocol}`, `pktbeat_unmatched_messages_total{protocol,direction}`
- `pktbeat_queue_events`, `pktbeat_spool_events`, `pktbeat_spool_bytes`, `pktbeat_ring_pending_bytes`
- `pktbeat_output_events_total{outcome}`            acked, failed (refused by the output for good),
                                                    retried, dropped (queue and spool full)
- `pktbeat_process_resident_memory_bytes{process}`, `pktbeat_process_cpu_seconds_total{process}`
  for the main process and each capture worker
- `pktbeat_transaction_duration_seconds{protocol}`  a latency histogram
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from agent import metrics
from agent.runtime.topstats import LATENCY_BOUNDS_S

Flat = dict[str, int]
PerInterface = dict[str, dict[str, int]]

KERNEL_DROPS = ("ring_full", "load_failed", "emit_failed")
KERNEL_OTHER = {"bytes", "wakeups", "flow_new", "flow_failed"}
# Protocol counter names that mean "a message could not be parsed" / "had no partner".
PARSE_ERRORS = ("parse_errors", "parse_failures")
UNMATCHED = {"unmatched_requests": "request", "unmatched_responses": "response"}
OUTPUT_OUTCOMES = {"acked": ("pipeline.acked",), "failed": ("pipeline.dropped",),
                   "retried": ("pipeline.retried",), "dropped": ("pipeline.queue_full_drops", "spool.full_drops")}
EVENTS_PREFIX = "events."  # events.<type>.<status>, counted by the capture workers
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")


@dataclass
class Sources:
    """What a scrape reads; every part but `counters` is optional."""

    counters: Callable[[], Flat]
    interfaces: Callable[[], PerInterface] | None = None
    gauges: Callable[[], dict[str, float]] | None = None
    processes: Callable[[], dict[str, int]] | None = None  # role -> pid
    protocols: Iterable[str] = field(default_factory=tuple)
    top: Callable[[], dict[str, Any]] | None = None  # topstats.merge() of the workers' snapshots


def metric_name(dotted: str) -> str:
    name = _NAME_BAD.sub("_", dotted.replace(".", "_")).strip("_")
    return f"pktbeat_{name}"


class AgentCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        flat = dict(self.sources.counters())
        used: set[str] = set()
        if self.sources.interfaces is not None:
            yield from _kernel(self.sources.interfaces())
            used.update(k for k in flat if k.startswith("kernel."))
        yield from _events(flat, used)
        yield from _protocols(flat, used, self.sources.protocols)
        yield from _output(flat, used)
        yield from _gauges(self.sources.gauges() if self.sources.gauges is not None else {})
        if self.sources.processes is not None:
            yield from _processes(self.sources.processes())
        if self.sources.top is not None:
            yield _latency(self.sources.top())
        yield from _generic(flat, used)


def _kernel(per_if: PerInterface) -> Iterator[Metric]:
    packets = CounterMetricFamily("pktbeat_kernel_packets", "Packets counted by the kernel program, by interface "
                                  "and counter (seen, matched, sent, emitted, not_ip, ...)",
                                  labels=["interface", "counter"])
    drops = CounterMetricFamily("pktbeat_kernel_drops", "Packets the kernel program could not hand to user space, "
                                "by interface and cause", labels=["interface", "cause"])
    octets = CounterMetricFamily("pktbeat_kernel_bytes", "Bytes seen by the kernel program", labels=["interface"])
    flows = CounterMetricFamily("pktbeat_kernel_flows", "Flow table entries created or refused in the kernel",
                                labels=["interface", "counter"])
    wakeups = CounterMetricFamily("pktbeat_kernel_wakeups", "Ring buffer wake-ups", labels=["interface"])
    for iface, values in sorted(per_if.items()):
        for name, value in values.items():
            if name in KERNEL_DROPS:
                drops.add_metric([iface, name], value)
            elif name == "bytes":
                octets.add_metric([iface], value)
            elif name == "wakeups":
                wakeups.add_metric([iface], value)
            elif name.startswith("flow_"):
                flows.add_metric([iface, name.removeprefix("flow_")], value)
            else:
                packets.add_metric([iface, name], value)
    yield from (packets, drops, octets, flows, wakeups)


def _events(flat: Flat, used: set[str]) -> Iterator[Metric]:
    family = CounterMetricFamily("pktbeat_events", "Events published, by protocol (event type) and status",
                                 labels=["protocol", "status"])
    for key, value in sorted(flat.items()):
        if key.startswith(EVENTS_PREFIX):
            protocol, _, status = key.removeprefix(EVENTS_PREFIX).partition(".")
            family.add_metric([protocol, status], value)
            used.add(key)
    yield family


def _protocols(flat: Flat, used: set[str], protocols: Iterable[str]) -> Iterator[Metric]:
    errors = CounterMetricFamily("pktbeat_parse_errors", "Messages a protocol parser rejected", labels=["protocol"])
    unmatched = CounterMetricFamily("pktbeat_unmatched_messages", "Requests without a response and responses "
                                    "without a request", labels=["protocol", "direction"])
    for protocol in sorted(set(protocols)):
        total = 0
        for name in PARSE_ERRORS:
            key = f"{protocol}.{name}"
            total += flat.get(key, 0)
            used.add(key)
        errors.add_metric([protocol], total)
        for name, direction in UNMATCHED.items():
            key = f"{protocol}.{name}"
            unmatched.add_metric([protocol, direction], flat.get(key, 0))
            used.add(key)
    yield errors
    yield unmatched


def _output(flat: Flat, used: set[str]) -> Iterator[Metric]:
    family = CounterMetricFamily("pktbeat_output_events", "Events by delivery outcome: acked; failed (refused by "
                                 "the output for good); retried (attempts); dropped (queue and spool full)",
                                 labels=["outcome"])
    for outcome, keys in OUTPUT_OUTCOMES.items():
        family.add_metric([outcome], sum(flat.get(k, 0) for k in keys))
        used.update(keys)
    yield family


def _gauges(values: dict[str, float]) -> Iterator[Metric]:
    helps = {"queue_events": "Events in the memory queue", "spool_events": "Events in the disk spool, not yet acked",
             "spool_bytes": "Bytes of the disk spool", "ring_pending_bytes": "Bytes waiting in the ring buffers"}
    for name, value in sorted(values.items()):
        yield GaugeMetricFamily(f"pktbeat_{name}", helps.get(name, name.replace("_", " ")), value=value)


def _processes(pids: dict[str, int]) -> Iterator[Metric]:
    rss = GaugeMetricFamily("pktbeat_process_resident_memory_bytes", "Resident memory of each pktbeat process",
                            labels=["process"])
    cpu = CounterMetricFamily("pktbeat_process_cpu_seconds", "CPU time (user + system) of each pktbeat process",
                              labels=["process"])
    for role, pid in sorted(pids.items()):
        sample = process_sample(pid)
        if sample is not None:
            rss.add_metric([role], sample[0])
            cpu.add_metric([role], sample[1])
    yield rss
    yield cpu


_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


def process_sample(pid: int) -> tuple[int, float] | None:
    """(RSS bytes, CPU seconds) of `pid` from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * _PAGE
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return rss, (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, ValueError, IndexError):
        return None


def _latency(top: dict[str, Any]) -> Metric:
    family = HistogramMetricFamily("pktbeat_transaction_duration_seconds", "Transaction latency (request to "
                                   "response), by protocol", labels=["protocol"])
    for protocol, counts in sorted(top.get("latency", {}).items()):
        running, buckets = 0, []
        for bound, count in zip((*LATENCY_BOUNDS_S, float("inf")), counts, strict=False):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        family.add_metric([protocol], buckets, top.get("latency_sum_ns", {}).get(protocol, 0) / 1e9)
    return family


def _generic(flat: Flat, used: set[str]) -> Iterator[Metric]:
    seen: set[str] = set()
    for key, value in sorted(flat.items()):
        if key in used:
            continue
        name = metric_name(key)
        if name in seen:
            continue
        seen.add(name)
        if metrics.is_gauge(key):
            yield GaugeMetricFamily(name, f"{key} (gauge)", value=value)
        else:
            yield CounterMetricFamily(name, f"{key} (counter)", value=value)


def registry_for(sources: Sources) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(sources))
    return registry
