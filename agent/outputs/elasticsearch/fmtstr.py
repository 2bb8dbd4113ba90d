"""Beats format strings in index names, pipelines and Redis keys: `%{[field.path]}`, `%{+yyyy.MM.dd}`.

A format string is compiled once; evaluating it for an event parses the
event's JSON only when the string refers to an event field or date.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agent.version import VERSION

_TOKEN = re.compile(r"%\{(\[[^}]*\]|\+[^}]*)\}")
_FIELD_PART = re.compile(r"\[([^\]]*)\]")
# Joda-style date patterns Beats users write, translated to strftime.
_DATE_CODES = (("yyyy", "%Y"), ("YYYY", "%Y"), ("yy", "%y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"),
               ("mm", "%M"), ("ss", "%S"))
_STATIC = {"agent.version": VERSION, "beat.version": VERSION, "observer.version": VERSION,
           "agent.type": "packetbeat", "beat.name": "packetbeat"}


class FormatError(ValueError):
    pass


def _strftime_pattern(joda: str) -> str:
    out = joda
    for src, dst in _DATE_CODES:
        out = out.replace(src, dst)
    return out


class FormatString:
    """A compiled format string; `render(data)` gives the value for one encoded event."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._parts: list[str | tuple[str, str]] = []  # literal, or (kind, arg)
        pos = 0
        for match in _TOKEN.finditer(text):
            if match.start() > pos:
                self._parts.append(text[pos:match.start()])
            token = match.group(1)
            if token.startswith("+"):
                self._parts.append(("date", _strftime_pattern(token[1:])))
            else:
                fields = _FIELD_PART.findall(token)
                if not fields:
                    raise FormatError(f"bad field reference {match.group(0)!r} in {text!r}")
                path = ".".join(fields)
                if path in _STATIC:
                    self._parts.append(_STATIC[path])
                else:
                    self._parts.append(("field", path))
            pos = match.end()
        if pos < len(text):
            self._parts.append(text[pos:])
        if "%{" in "".join(p for p in self._parts if isinstance(p, str)):
            raise FormatError(f"unterminated %{{...}} in {text!r}")
        self.constant: str | None = "".join(p for p in self._parts if isinstance(p, str)) \
            if all(isinstance(p, str) for p in self._parts) else None

    def render(self, data: bytes) -> str | None:
        """The value for one event, or None when a referenced field is missing."""
        if self.constant is not None:
            return self.constant
        event = json.loads(data)
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            kind, arg = part
            if kind == "date":
                out.append(_event_time(event).strftime(arg))
            else:
                value = _lookup(event, arg)
                if value is None or isinstance(value, (dict, list)):
                    return None
                out.append(str(value).lower() if isinstance(value, bool) else str(value))
        return "".join(out)


def _lookup(event: dict[str, Any], path: str) -> Any:
    if path in event:
        return event[path]
    node: Any = event
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _event_time(event: dict[str, Any]) -> datetime:
    stamp = event.get("@timestamp")
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def compile_cached() -> Callable[[str], FormatString]:
    cache: dict[str, FormatString] = {}

    def get(text: str) -> FormatString:
        found = cache.get(text)
        if found is None:
            found = cache[text] = FormatString(text)
        return found

    return get
