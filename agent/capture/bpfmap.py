"""Raw access to BPF maps by fd: bytes in, bytes out, through libbcc's syscall wrappers.

Keys and values are packed with the struct formats of agent/capture/record.py
(checked against bpf/record.h by a test), so nothing here depends on BCC's
ctypes reflection of the C types.  Only the parent process uses this.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
import struct

from bcc.libbcc import lib

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2


def possible_cpus() -> int:
    """Number of possible CPUs: the width of every per-CPU map value."""
    try:
        text = open("/sys/devices/system/cpu/possible").read().strip()  # noqa: SIM115
    except OSError:
        return os.cpu_count() or 1
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += (int(hi) - int(lo) + 1) if hi else 1
    return max(1, count)


class MapError(OSError):
    pass


class BpfMap:
    """One map: fixed key and value sizes; per-CPU maps return every CPU's value."""

    def __init__(self, name: str, fd: int, key_size: int, value_size: int, max_entries: int,
                 percpu: bool = False) -> None:
        self.name = name
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.percpu = percpu
        self.ncpus = possible_cpus() if percpu else 1
        # Per-CPU values are copied CPU after CPU, each rounded up to 8 bytes.
        self.stride = (value_size + 7) & ~7 if percpu else value_size
        self._key = ct.create_string_buffer(key_size)
        self._next = ct.create_string_buffer(key_size)
        self._value = ct.create_string_buffer(self.stride * self.ncpus)

    def _check(self, key: bytes) -> None:
        if len(key) != self.key_size:
            raise ValueError(f"{self.name}: key of {len(key)} bytes, expected {self.key_size}")

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        self._check(key)
        expected = self.stride * self.ncpus if self.percpu else self.value_size
        if len(value) != expected:
            raise ValueError(f"{self.name}: value of {len(value)} bytes, expected {expected}")
        self._key.raw = key
        buf = ct.create_string_buffer(value, len(value))
        if lib.bpf_update_elem(self.fd, self._key, buf, flags) != 0:
            err = ct.get_errno()
            raise MapError(err, f"{self.name}: update failed: {os.strerror(err)}")

    def lookup(self, key: bytes) -> bytes | None:
        """The value (per-CPU maps: every CPU's, concatenated with `stride`), or None."""
        self._check(key)
        self._key.raw = key
        if lib.bpf_lookup_elem(self.fd, self._key, self._value) != 0:
            return None
        return self._value.raw[: self.stride * self.ncpus]

    def per_cpu(self, value: bytes) -> list[bytes]:
        return [value[i * self.stride:i * self.stride + self.value_size] for i in range(self.ncpus)]

    def counter_totals(self, key: bytes, names: tuple[str, ...]) -> dict[str, int]:
        """A per-CPU array of u64 counters at `key`, summed over CPUs, by name (zeros when unreadable)."""
        totals = [0] * len(names)
        raw = self.lookup(key)
        if raw is not None:
            for part in self.per_cpu(raw):
                for i, value in enumerate(struct.unpack_from(f"<{len(names)}Q", part)):
                    totals[i] += value
        return dict(zip(names, totals, strict=True))

    def delete(self, key: bytes) -> bool:
        self._check(key)
        self._key.raw = key
        return lib.bpf_delete_elem(self.fd, self._key) == 0

    def keys(self, limit: int | None = None) -> list[bytes]:
        """Every key, by get_next_key (bounded by max_entries)."""
        out: list[bytes] = []
        bound = self.max_entries if limit is None else min(limit, self.max_entries)
        if lib.bpf_get_next_key(self.fd, None, self._next) != 0:
            return out
        while len(out) < bound:
            key = self._next.raw
            out.append(key)
            self._key.raw = key
            if lib.bpf_get_next_key(self.fd, self._key, self._next) != 0:
                break
        return out

    def dump(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value) pair: batched when the kernel supports it, else key by key."""
        try:
            return self._dump_batch()
        except MapError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, 524):
                raise
        out = []
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                out.append((key, value))
        return out

    def _dump_batch(self) -> list[tuple[bytes, bytes]]:
        total_max = self.max_entries
        vsize = self.stride * self.ncpus
        keys = ct.create_string_buffer(self.key_size * total_max)
        values = ct.create_string_buffer(vsize * total_max)
        in_batch = ct.c_uint32(0)
        out_batch = ct.c_uint32(0)
        count = ct.c_uint32(0)
        total = 0
        first = True
        # Hash-map batches can return fewer entries than asked; bounded by the map size.
        for _ in range(total_max + 1):
            count.value = total_max - total
            if count.value == 0:
                break
            res = lib.bpf_lookup_batch(
                self.fd, None if first else ct.byref(in_batch), ct.byref(out_batch),
                ct.byref(keys, self.key_size * total), ct.byref(values, vsize * total), ct.byref(count))
            err = ct.get_errno() if res != 0 else 0
            total += count.value
            if res != 0:
                if err == errno.ENOENT:
                    break
                if err == errno.ENOSPC and count.value == 0:
                    break  # a bucket larger than the space left: what we have is what fits
                raise MapError(err, f"{self.name}: batch lookup failed: {os.strerror(err)}")
            first = False
            in_batch.value = out_batch.value
        raw_keys = keys.raw
        raw_values = values.raw
        return [(raw_keys[i * self.key_size:(i + 1) * self.key_size], raw_values[i * vsize:(i + 1) * vsize])
                for i in range(total)]
