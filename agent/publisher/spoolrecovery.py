"""What a spool directory holds when a spool starts (or a tool looks): segments checked, where to resume.

Every segment is scanned (agent/publisher/spoolformat.py): its valid records
counted, its damage located.  Losses are exact where the next segment's name
(the sequence number of its first record) says how many records a segment
held, otherwise estimated from the record starts found in the damaged bytes.

`ack.json` is trusted only when it points at a record boundary of an existing
segment; otherwise sending resumes at the start of the oldest segment, the
last position certainly acknowledged (a segment is deleted only once all of
it is acknowledged).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from agent.publisher import spoolformat as fmt

log = logging.getLogger("pktbeat.publisher.spool")

SEGMENT_SUFFIX = ".seg"
ACK_FILE = "ack.json"


@dataclass(frozen=True, slots=True)
class Position:
    segment: int  # first sequence number of the segment (its file name)
    offset: int  # byte offset of a record in it


@dataclass
class _Found:
    first: int
    path: Path
    size: int
    scan: fmt.Scan


@dataclass
class RecoveredState:
    segments: list[_Found] = field(default_factory=list)
    acknowledged: list[Path] = field(default_factory=list)  # segments before the ack position
    start: Position = Position(-1, 0)
    pending: int = 0
    lost: int = 0
    next_seq: int = 0


def recover_state(directory: Path, announce: bool = False) -> RecoveredState:
    """What a spool directory holds: its segments checked, where sending starts, how much is pending."""
    state = RecoveredState()
    ack, ack_problem = _load_ack(directory)
    found: list[tuple[int, Path]] = []
    for path in directory.glob("*" + SEGMENT_SUFFIX):
        try:
            found.append((int(path.stem), path))
        except ValueError:
            continue
    found.sort()
    # Segments before the acknowledged one are gone for good only when the ack position itself checks out.
    at_ack = next((_scan_file(first, path, ack.offset) for first, path in found if first == ack.segment), None)
    ack_trusted = at_ack is not None and at_ack.scan.boundaries_hit
    for first, path in found:
        if ack_trusted and first < ack.segment:
            state.acknowledged.append(path)
            continue
        scanned = at_ack if at_ack is not None and first == ack.segment else _scan_file(first, path, -1)
        if scanned is not None:
            state.segments.append(scanned)
    _account(state, announce)
    state.start, trusted = _start_position(state, ack)
    if announce and ack_problem:
        log.warning("spool: %s", ack_problem)
    elif announce and not trusted:
        log.warning("spool: %s points at segment %d, offset %d: %s; resending from the start of the oldest "
                    "segment (events already delivered get the same ids, so none is stored twice)", ACK_FILE,
                    ack.segment, ack.offset, _why_untrusted(state, ack))
    state.pending = _pending_from(state, state.start)
    return state


def _scan_file(first: int, path: Path, probe: int) -> _Found | None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            return _Found(first, path, size, fmt.scan(_file_source(handle.fileno()), size, probe))
    except OSError as exc:
        log.error("spool: cannot read %s: %s; skipped", path, exc.strerror)
        return None


def _load_ack(directory: Path) -> tuple[Position, str]:
    try:
        state = json.loads((directory / ACK_FILE).read_bytes())
        return Position(int(state["segment"]), int(state["offset"])), ""
    except FileNotFoundError:
        return Position(-1, 0), ""
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Position(-1, 0), f"{ACK_FILE} unreadable ({exc}); resending everything spooled"


def _account(state: RecoveredState, announce: bool) -> None:
    """Damage counts (exact where the next segment's name says how many records a segment held)."""
    for i, seg in enumerate(state.segments):
        following = state.segments[i + 1].first if i + 1 < len(state.segments) else None
        expected = following - seg.first if following is not None else None
        lost = max(0, expected - seg.scan.records) if expected is not None else seg.scan.lost
        state.lost += lost
        state.next_seq = max(state.next_seq, seg.first + max(seg.scan.records + seg.scan.lost, expected or 0))
        if not announce:
            continue
        if seg.size < len(fmt.SEGMENT_HEADER) and not seg.scan.legacy:
            if expected:
                log.warning("spool: %s is empty: its %d event(s) are lost", seg.path.name, expected)
            elif seg.size:
                log.warning("spool: %s ends after %d byte(s); nothing to read in it", seg.path.name, seg.size)
        elif lost or seg.scan.damage:
            where = ", ".join(f"bytes {d.start}-{d.end}" for d in seg.scan.damage[:5]) or "missing records"
            log.warning("spool: %s: %d damaged or missing event(s) skipped (%s); %d good event(s) kept",
                        seg.path.name, lost, where, seg.scan.records)


def _start_position(state: RecoveredState, ack: Position) -> tuple[Position, bool]:
    """Where sending starts, and whether ack.json was trusted."""
    if not state.segments:
        return Position(state.next_seq, 0), True
    oldest = state.segments[0]
    if ack.segment < oldest.first:
        return Position(oldest.first, oldest.scan.data_start), True  # older segments were acknowledged
    for seg in state.segments:
        if seg.first == ack.segment and seg.scan.boundaries_hit:
            return Position(seg.first, max(ack.offset, seg.scan.data_start)), True
    return Position(oldest.first, oldest.scan.data_start), False


def _why_untrusted(state: RecoveredState, ack: Position) -> str:
    for seg in state.segments:
        if seg.first == ack.segment:
            return "past the end of the segment" if ack.offset > seg.size else "not at the start of a record"
    return "no such segment"


def _pending_from(state: RecoveredState, start: Position) -> int:
    pending = 0
    for seg in state.segments:
        if seg.first < start.segment:
            continue
        if seg.first == start.segment and start.offset > seg.scan.data_start:
            pending += seg.scan.records - _records_before(seg, start.offset)
        else:
            pending += seg.scan.records
    return pending


def _records_before(seg: _Found, offset: int) -> int:
    with open(seg.path, "rb") as handle:
        return fmt.scan(_file_source(handle.fileno()), min(offset, seg.size)).records


def _file_source(fd: int) -> fmt.Source:
    def read(offset: int, length: int) -> bytes:
        return os.pread(fd, length, offset)

    return read


def spool_pending(directory: str | os.PathLike[str]) -> int:
    """Unacknowledged events in a spool directory (for tools and tests; opens nothing for writing)."""
    return recover_state(Path(directory)).pending
