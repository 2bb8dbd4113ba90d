"""Which interfaces live capture is attached to, kept in step with the device setting.

`LinkWatcher` turns netlink link notifications into "re-scan now"; `Interfaces`
attaches TC filters to what `packetbeat.interfaces.device` selects at that
moment (a VPN tun that comes up later, or is recreated, is attached within a
second), forgets what went away (keeping its final kernel counters by name),
and warns about an interface that stays silent while others see traffic.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.capture.record import COUNTER_NAMES, DROP_COUNTERS

if TYPE_CHECKING:
    from agent.capture.devices import DeviceSpec
    from agent.capture.kernel import KernelProgram
    from agent.capture.tc import TcManager

log = logging.getLogger("pktbeat")

SILENCE_S = 30.0
RETRY_FAILED_S = 60.0  # an interface that failed to attach is tried again after this

RTMGRP_LINK = 1
RTM_NEWLINK = 16
RTM_DELLINK = 17

Counters = list[int]  # one value per COUNTER_NAMES entry


class LinkWatcher:
    """RTNLGRP_LINK notifications: any link change schedules a re-scan of the interfaces."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, RTMGRP_LINK))
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> bool:
        """Read every pending notification; True when a link appeared, changed or went away."""
        changed = False
        for _ in range(1024):
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                changed = True  # ENOBUFS: notifications were lost; re-scan anyway
                continue
            at = 0
            while at + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, at)
                if kind in (RTM_NEWLINK, RTM_DELLINK):
                    changed = True
                if length < 16:
                    break
                at += (length + 3) & ~3
        return changed

    def close(self) -> None:
        self.sock.close()


@dataclass
class IfaceState:
    name: str
    last_seen: int = 0
    last_change: float = 0.0
    silent_warned: bool = False


class Interfaces:
    """The attached interfaces, those that failed, and the counters of those that went away."""

    def __init__(self, spec: DeviceSpec | None, kernel: KernelProgram | None, tc: TcManager | None) -> None:
        self.spec = spec
        self.kernel = kernel
        self.tc = tc
        self.attached: dict[int, IfaceState] = {}
        self.failed: dict[int, tuple[str, float, str]] = {}  # ifindex -> (name, when, reason)
        self.history: dict[str, Counters] = {}  # final counters of interfaces that went away, by name
        self.announce = False  # log each attach (after start-up, which logs them together)

    def names(self) -> list[str]:
        return sorted(state.name for state in self.attached.values())

    def reconcile(self) -> None:
        """Attach what the device setting selects now; forget what went away."""
        from agent.capture.devices import list_devices
        from agent.capture.tc import TcError

        assert self.spec is not None and self.kernel is not None and self.tc is not None
        try:
            devices = list_devices(self.tc.ipr)
        except Exception as exc:
            log.warning("cannot list interfaces: %s", exc)
            return
        present = {d.index: d for d in devices}
        wanted = {d.index: d for d in self.spec.select(devices)}
        for ifindex in list(self.attached):
            state = self.attached[ifindex]
            device = present.get(ifindex)
            if ifindex in wanted and device is not None and device.name == state.name:
                continue
            self.forget(ifindex, gone=device is None)
        now = time.monotonic()
        for ifindex, device in wanted.items():
            if ifindex in self.attached:
                continue
            failed = self.failed.get(ifindex)
            if failed is not None and failed[0] == device.name and now - failed[1] < RETRY_FAILED_S:
                continue  # retried later, or at once if it is recreated (new ifindex) or renamed
            try:
                # The link-header length first: the program must not parse a tun device as Ethernet.
                self.kernel.register_iface(ifindex, device.link_len)
                self.tc.attach(ifindex, device.name, ingress_only=device.ingress_only)
            except Exception as exc:
                reason = exc.reason if isinstance(exc, TcError) else str(exc)
                again = failed is not None and failed[2] == reason
                (log.debug if again else log.warning)("cannot attach to %s: %s; skipping it", device.name, reason)
                self.failed[ifindex] = (device.name, now, reason)
                with contextlib.suppress(Exception):
                    self.kernel.unregister_iface(ifindex)
                continue
            self.attached[ifindex] = IfaceState(device.name, 0, now)
            self.failed.pop(ifindex, None)
            if self.announce:
                log.info("attached to %s (ifindex %d, %s%s)", device.name, ifindex, device.kind,
                         ", ingress only" if device.ingress_only else "")
        if not self.spec.any:
            for name in self.spec.names:
                match = [d for d in devices if d.name == name]
                if match and not match[0].attachable and match[0].index not in self.failed:
                    log.warning("cannot attach to %s: %s", name, match[0].reason)
                    self.failed[match[0].index] = (name, float("inf"), match[0].reason)
        for ifindex in list(self.failed):
            if ifindex not in present:
                del self.failed[ifindex]

    def forget(self, ifindex: int, gone: bool) -> None:
        assert self.kernel is not None and self.tc is not None
        state = self.attached.pop(ifindex)
        if not gone:
            self.tc.detach(ifindex)
        else:
            self.tc.attached.pop(ifindex, None)
        final = self.kernel.unregister_iface(ifindex)
        self.add_history(state.name, final)
        log.info("%s (ifindex %d) %s; its counters: %s", state.name, ifindex,
                 "went away" if gone else "is no longer selected", format_counters(final))

    def release_all(self) -> None:
        """At stop, after the filters are gone: keep every interface's final counters."""
        for ifindex in list(self.attached):
            if self.kernel is not None:
                with contextlib.suppress(Exception):
                    self.add_history(self.attached[ifindex].name, self.kernel.unregister_iface(ifindex))
            self.attached.pop(ifindex, None)

    def add_history(self, name: str, counters: Counters) -> None:
        total = self.history.setdefault(name, [0] * len(COUNTER_NAMES))
        for i, value in enumerate(counters):
            total[i] += value

    def per_interface(self, by_if: dict[int, Counters]) -> dict[str, Counters]:
        """Counters by interface name: attached ones, those that went away, and unattributed packets."""
        out = {name: list(values) for name, values in self.history.items()}
        for ifindex, values in by_if.items():
            state = self.attached.get(ifindex)
            if state is None and not any(values):
                continue
            name = state.name if state is not None else ("(unregistered)" if ifindex == 0 else f"ifindex {ifindex}")
            total = out.setdefault(name, [0] * len(COUNTER_NAMES))
            for i, v in enumerate(values):
                total[i] += v
        return out

    def check_silence(self, by_if: dict[int, Counters], now: float) -> None:
        """Warn once about an up interface that sees nothing for SILENCE_S while others see traffic."""
        seen_index = COUNTER_NAMES.index("seen")
        active_recently = False
        for ifindex, state in self.attached.items():
            seen = by_if.get(ifindex, [0] * len(COUNTER_NAMES))[seen_index]
            if seen != state.last_seen:
                state.last_seen = seen
                state.last_change = now
                if state.silent_warned:
                    log.info("%s sees traffic again", state.name)
                    state.silent_warned = False
            if now - state.last_change < SILENCE_S:
                active_recently = True
        if not active_recently:
            return
        for ifindex, state in self.attached.items():
            if state.silent_warned or now - state.last_change < SILENCE_S:
                continue
            if not is_up(state.name):
                continue
            state.silent_warned = True
            log.warning("%s (ifindex %d) has seen no packet for %ds while other interfaces see traffic; another TC "
                        "program running before pktbeat's (tc filter show dev %s ingress/egress) may be "
                        "consuming it", state.name, ifindex, int(SILENCE_S), state.name)


def is_up(name: str) -> bool:
    try:
        flags = int(Path(f"/sys/class/net/{name}/flags").read_text(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & 1)


def format_counters(values: Counters) -> str:
    named = dict(zip(COUNTER_NAMES, values, strict=True))
    drops = {n: named[n] for n in DROP_COUNTERS if named[n]}
    main = ("seen", "skbs", "matched", "sent", "emitted", "unmatched", "no_payload", "not_ip", "malformed", "other_l4",
            "truncated", "fragment", "frag_no_ports", "flow_new", "flow_failed", "bytes", "gso", "decapsulated",
            "tunnel_too_deep", "tunnel_not_followed")
    text = ", ".join(f"{n}={named[n]}" for n in main if named[n] or n in ("seen", "matched", "emitted"))
    dropped = ", ".join(f"{n}={v}" for n, v in drops.items()) or "none"
    return f"{text}; dropped: {dropped}"
