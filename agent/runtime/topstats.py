"""Per-transaction summaries for `pktbeat top` and the latency histogram of /metrics.

Each capture worker feeds every transaction event it publishes to a `TransactionStats`: a latency
histogram per protocol (fixed buckets, Prometheus' `pktbeat_transaction_duration_seconds`) and a
bounded table of server endpoints (protocol, address, port) with their count, total and maximum
latency.  The table holds at most `MAX_ENDPOINTS` entries: when it is full the less used half is
forgotten (counted in `evicted`), so a scan over many addresses costs bounded memory and the busy
endpoints stay.  Everything is cumulative since the worker started; the parent sums the workers'
snapshots and `pktbeat top` shows differences between two reads.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, subclasses only in compiled modules); an edit is
used natively only after set-up rebuilds (`scripts/accel.py build`).  It runs
once per published transaction of a live worker.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Final

# Upper bounds (seconds) of the latency buckets; one more bucket counts everything above.
LATENCY_BOUNDS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0)
_BOUNDS_NS = tuple(int(b * 1e9) for b in LATENCY_BOUNDS_S)
MAX_ENDPOINTS: Final = 512


class TransactionStats:
    def __init__(self, max_endpoints: int = MAX_ENDPOINTS) -> None:
        self.max_endpoints = max_endpoints
        self.latency: dict[str, list[int]] = {}  # protocol -> bucket counts (len(bounds) + 1)
        self.latency_sum_ns: dict[str, int] = {}
        # (protocol, address, port) -> [count, sum_ns, max_ns]; named "proto addr:port" in snapshots
        self.endpoints: dict[tuple[str, object, object], list[int]] = {}
        self.evicted = 0

    def add(self, event: dict[str, Any]) -> None:
        protocol = event.get("type")
        if not isinstance(protocol, str) or protocol == "flow":
            return
        duration = (event.get("event") or {}).get("duration")
        destination = event.get("destination") or {}
        key = (protocol, destination.get("ip", "?"), destination.get("port", ""))
        entry = self.endpoints.get(key)
        if entry is None:
            if len(self.endpoints) >= self.max_endpoints:
                self._evict()
            entry = self.endpoints[key] = [0, 0, 0]
        entry[0] += 1
        if not isinstance(duration, int) or duration < 0:
            return
        entry[1] += duration
        entry[2] = max(entry[2], duration)
        buckets = self.latency.get(protocol)
        if buckets is None:
            buckets = self.latency[protocol] = [0] * (len(_BOUNDS_NS) + 1)
            self.latency_sum_ns[protocol] = 0
        buckets[bisect_left(_BOUNDS_NS, duration)] += 1  # the first bucket whose bound is >= duration
        self.latency_sum_ns[protocol] += duration

    def _evict(self) -> None:
        keep = sorted(self.endpoints.items(), key=lambda item: item[1][0], reverse=True)[: self.max_endpoints // 2]
        self.evicted += len(self.endpoints) - len(keep)
        self.endpoints = dict(keep)

    def snapshot(self) -> dict[str, Any]:
        endpoints = {f"{protocol} {ip}:{port}": entry for (protocol, ip, port), entry in self.endpoints.items()}
        return {"latency": self.latency, "latency_sum_ns": self.latency_sum_ns, "endpoints": endpoints,
                "evicted": self.evicted}


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several workers' snapshots."""
    latency: dict[str, list[int]] = {}
    sums: dict[str, int] = {}
    endpoints: dict[str, list[int]] = {}
    evicted = 0
    for snap in snapshots:
        for protocol, buckets in snap.get("latency", {}).items():
            total = latency.setdefault(protocol, [0] * len(buckets))
            for i, count in enumerate(buckets[: len(total)]):
                total[i] += count
        for protocol, value in snap.get("latency_sum_ns", {}).items():
            sums[protocol] = sums.get(protocol, 0) + value
        for key, (count, sum_ns, max_ns) in snap.get("endpoints", {}).items():
            entry = endpoints.setdefault(key, [0, 0, 0])
            entry[0] += count
            entry[1] += sum_ns
            entry[2] = max(entry[2], max_ns)
        evicted += snap.get("evicted", 0)
    return {"latency": latency, "latency_sum_ns": sums, "endpoints": endpoints, "evicted": evicted,
            "bounds_s": list(LATENCY_BOUNDS_S)}


def percentile(buckets: list[int], fraction: float) -> float | None:
    """The `fraction` quantile in seconds, interpolated inside its bucket (as Prometheus' histogram_quantile);
    None without data, the last bound when it falls in the open-ended bucket."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = fraction * total
    running = 0
    for i, count in enumerate(buckets):
        if count and running + count >= rank:
            if i >= len(LATENCY_BOUNDS_S):
                return LATENCY_BOUNDS_S[-1]
            low = LATENCY_BOUNDS_S[i - 1] if i else 0.0
            return low + (LATENCY_BOUNDS_S[i] - low) * (rank - running) / count
        running += count
    return LATENCY_BOUNDS_S[-1]
