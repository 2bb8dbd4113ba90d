"""Adding the processes of a conversation's local endpoints to its event.

Packetbeat's fields: `source.process.*` for the source endpoint's process,
`destination.process.*` for the destination's, and `process.*` repeating
the destination's (the one serving) or, when only the source is local, the
source's.  pktbeat adds `container.id` of the process in `process` (ECS has
one container per event).
"""

from __future__ import annotations

from typing import Any, Protocol

from agent.procs.process import ProcessInfo, process_fields

TRANSPORT_NUMBERS = {"tcp": 6, "udp": 17}


class Finder(Protocol):
    def find(self, l4proto: int, local: bytes, lport: int, remote: bytes, rport: int) -> ProcessInfo | None: ...


def annotate(event: dict[str, Any], finder: Finder, l4proto: int, src_ip: bytes, src_port: int, dst_ip: bytes,
             dst_port: int) -> None:
    """Add the process fields of whichever endpoints `finder` knows; nothing when it knows neither."""
    src = finder.find(l4proto, src_ip, src_port, dst_ip, dst_port)
    dst = finder.find(l4proto, dst_ip, dst_port, src_ip, src_port)
    if src is not None:
        _add(event, "source", src)
    if dst is not None:
        _add(event, "destination", dst)
    main = dst if dst is not None else src
    if main is None:
        return
    event["process"] = process_fields(main)
    if main.container_id:
        event["container"] = {"id": main.container_id}


def _add(event: dict[str, Any], side: str, info: ProcessInfo) -> None:
    part = event.get(side)
    if not isinstance(part, dict):
        part = event[side] = {}
    part["process"] = process_fields(info)
