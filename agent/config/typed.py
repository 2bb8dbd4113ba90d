"""Building frozen, typed config objects from Packetbeat-style YAML mappings.

A config section is a frozen dataclass; each field's type (and `kind` in its
metadata for durations and sizes) says how the YAML value is converted.
Unknown keys are errors that name the key and suggest the nearest known one.
Every number has an allowed range: its own (`bounds=`) or, when it has none,
the default of its kind below (never negative; durations up to 30 days, sizes
up to 1 TiB); a value outside it is an error that gives the range.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


MAX_REASON = 300  # characters of a reason kept in the one-line message (a value quoted in it can be huge)


class ConfigError(Exception):
    """A setting that is missing, unknown or invalid: where it is and why."""

    def __init__(self, key: str, reason: str, file: str | None = None) -> None:
        reason = " ".join(reason.split())
        if len(reason) > MAX_REASON:
            reason = reason[:MAX_REASON] + "..."
        self.key = key
        self.reason = reason
        self.file = file
        where = f"{file}: " if file else ""
        super().__init__(f"{where}{key}: {reason}" if key else f"{where}{reason}")

    def in_file(self, file: str | None) -> ConfigError:
        return ConfigError(self.key, self.reason, file) if file and not self.file else self


_DURATION_PART = re.compile(r"([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any, key: str = "") -> float:
    """Seconds from a Go duration ("10s", "1m30s", "400ms", "-1s") or a number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a duration such as 10s, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[-+]?\d+(?:\.\d*)?", text):
            return float(text)
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        pos, total = 0, 0.0
        for match in _DURATION_PART.finditer(body):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if body and pos == len(body):
            return sign * total
    raise ConfigError(key, f"expected a duration such as 10s, 400ms or 1m, got {value!r}")


_SIZE = re.compile(r"(\d+(?:\.\d*)?)\s*([kmgt]?i?b?)", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
               "tb": 1000**4, "tib": 1024**4, "ki": 1024, "mi": 1024**2, "gi": 1024**3}


def parse_size(value: Any, key: str = "") -> int:
    """Bytes from an integer or a size such as "10MiB", "1GB", "512KB"."""
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a size such as 10MiB, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match and match.group(2).lower() in _SIZE_UNITS:
            number = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
            if number != float("inf"):
                return int(number)
    raise ConfigError(key, f"expected a size such as 10MiB or 1GB, got {value!r}")


def parse_mode(value: Any, key: str = "") -> str:
    """A file mode as the octal text "0600": from "0600"/"0o640"/"600" (octal, as chmod reads them) or an
    integer, which is YAML's reading of an unquoted 0600 (384), as Beats takes it."""
    mode = -1
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str) and re.fullmatch(r"(0o?)?[0-7]{1,4}", value.strip().lower()):
        mode = int(value.strip().lower().removeprefix("0o"), 8)
    if not 0 <= mode <= 0o777:
        raise ConfigError(key, f"expected an octal file mode from 0000 to 0777 such as 0600, got {value!r}")
    return f"0{mode:03o}"


DAY = 86400.0
GIB = 1024**3
TIB = 1024**4
INT_MAX = 2**31 - 1
# The range of a number whose field gives none, by kind ("" is a plain int or float).
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {"duration": (0.0, 30 * DAY), "size": (0, TIB), "": (0, INT_MAX)}


def opt(default: Any, *, kind: str = "", doc: str = "", check: Callable[[Any], str | None] | None = None,
        aliases: tuple[str, ...] = (), bounds: tuple[float, float] | None = None) -> Any:
    """A config field: `kind` is "duration", "size" or "mode" (a file mode) when the YAML value needs converting.

    `bounds` is the allowed (lowest, highest) value of a number, both included.
    """
    meta = {"kind": kind, "doc": doc, "check": check, "aliases": aliases, "bounds": bounds}
    if isinstance(default, (list, dict, set)):
        template = default
        return dataclasses.field(default_factory=lambda: _copy(template), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    if isinstance(value, (dict, list, set)):
        return type(value)(value)
    return value


def positive(value: int | float) -> str | None:
    """A `check` for opt(): the value must be greater than 0."""
    return None if value > 0 else "must be greater than 0"


def non_negative(value: int | float) -> str | None:
    """A `check` for opt(): the value must be 0 or more."""
    return None if value >= 0 else "must be 0 or more"


def suggest(key: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def build(cls: type[T], data: Mapping[str, Any] | None, path: str,
          ignored: frozenset[str] = frozenset(), warn: Callable[[str], None] | None = None,
          unsupported: Mapping[str, str] | None = None) -> T:
    """Instantiate dataclass `cls` from `data`, converting and validating each value.

    `ignored` keys are accepted silently (handled elsewhere); keys in
    `unsupported` are Packetbeat settings pktbeat does not implement: a warning.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    by_yaml: dict[str, dataclasses.Field[Any]] = {}
    for f in fields.values():
        by_yaml[f.name] = f
        for alias in f.metadata.get("aliases", ()):
            by_yaml[alias] = f
    values: dict[str, Any] = {}
    for key, raw in data.items():
        key = str(key)
        dotted = f"{path}.{key}" if path else key
        field = by_yaml.get(key)
        if field is None:
            if key in ignored:
                continue
            if unsupported and key in unsupported:
                if warn:
                    warn(f"{dotted}: {unsupported[key]}")
                continue
            raise ConfigError(dotted, "unknown setting" + suggest(key, by_yaml))
        kind = field.metadata.get("kind", "")
        values[field.name] = convert(raw, hints[field.name], kind, dotted)
        problem = out_of_bounds(values[field.name], kind, field.metadata.get("bounds"))
        if problem:
            raise ConfigError(dotted, problem)
        check = field.metadata.get("check")
        if check is not None:
            problem = check(values[field.name])
            if problem:
                raise ConfigError(dotted, problem)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(path, str(exc)) from None


def out_of_bounds(value: Any, kind: str, bounds: tuple[float, float] | None) -> str | None:
    """Why a number is outside its field's range (or the default range of its kind), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, high = bounds if bounds is not None else DEFAULT_BOUNDS[kind if kind in DEFAULT_BOUNDS else ""]
    if low <= value <= high:  # NaN compares false: out of every range
        return None
    return f"must be between {show(low, kind)} and {show(high, kind)}, got {show(value, kind)}"


_SIZE_SHOWN = (("TiB", TIB), ("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024), ("TB", 1000**4), ("GB", 1000**3),
               ("MB", 1000**2), ("KB", 1000))


def show(value: float, kind: str) -> str:
    """A number as it would be written in packetbeat.yml (10s, 1h, 10MB, 64MiB, 65535)."""
    if kind == "duration":
        sign, v = ("-", -value) if value < 0 else ("", value)
        for unit, seconds in (("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 1e-3)):
            if v >= seconds and round(v / seconds, 9).is_integer():
                return f"{sign}{round(v / seconds):d}{unit}"
        return f"{sign}{v:g}s"
    if kind == "size" and value > 0 and float(value).is_integer():
        for unit, size in _SIZE_SHOWN:
            if value % size == 0:
                return f"{int(value) // size}{unit}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def convert(raw: Any, hint: Any, kind: str, key: str) -> Any:
    if kind == "duration":
        if raw is None and _optional(hint):
            return None
        return parse_duration(raw, key)
    if kind == "size":
        if raw is None and _optional(hint):
            return None
        return parse_size(raw, key)
    if kind == "mode":
        return parse_mode(raw, key)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return convert(raw, inner[0], kind, key)
        errors = []
        for candidate in inner:
            try:
                return convert(raw, candidate, kind, key)
            except ConfigError as exc:
                errors.append(exc.reason)
        raise ConfigError(key, "; ".join(errors))
    if hint is Any:
        return raw
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "yes", "no", "on", "off"):
            return raw.lower() in ("true", "yes", "on")
        raise ConfigError(key, f"expected true or false, got {raw!r}")
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, (int, str, float)):
            raise ConfigError(key, f"expected an integer, got {raw!r}")
        try:
            value = int(raw)
        except (ValueError, OverflowError):  # OverflowError: .inf
            raise ConfigError(key, f"expected an integer, got {raw!r}") from None
        if isinstance(raw, float) and not raw.is_integer():
            raise ConfigError(key, f"expected an integer, got {raw!r}")
        return value
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ConfigError(key, f"expected a number, got {raw!r}")
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(key, f"expected a number, got {raw!r}") from None
    if hint is str:
        if isinstance(raw, (dict, list)) or raw is None:
            raise ConfigError(key, f"expected a string, got {raw!r}")
        return raw if isinstance(raw, str) else str(raw).lower() if isinstance(raw, bool) else str(raw)
    if origin is tuple:
        item_hint = args[0] if args else Any
        if raw is None:
            return ()
        items = raw if isinstance(raw, list) else [raw]
        return tuple(convert(item, item_hint, kind, f"{key}[{i}]") for i, item in enumerate(items))
    if origin is dict or hint is dict:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise ConfigError(key, f"expected a mapping, got {raw!r}")
        return dict(raw)
    if origin is list or hint is list:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise ConfigError(key, f"expected a list, got {raw!r}")
        return list(raw)
    if dataclasses.is_dataclass(hint):
        return build(hint, raw, key)  # type: ignore[arg-type]
    raise ConfigError(key, f"unsupported setting type {hint!r}")


def _optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)
