"""Reading packetbeat.yml: YAML, `${VAR:default}` expansion, dotted keys, and -E overrides.

Packetbeat's dialect writes `output.file.path: x` and `output: {file: {path: x}}`
interchangeably; both become the same nested mapping here.  Dotted keys are
kept as written inside processor definitions, `fields` and HTTP headers,
where a dot is part of a field or header name.

A config is hostile input like any other: the file is read up to
`MAX_CONFIG_BYTES`, must be UTF-8, may nest at most `MAX_DEPTH` levels, and
may hold at most `MAX_VALUES` values once its aliases are expanded (a
324-byte alias bomb otherwise expands to billions); an alias inside the value
it names is refused.  Each is a `ConfigError` naming the file and the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from agent.config.typed import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # Packetbeat's reference config is under 100 KB
MAX_DEPTH = 64  # nesting levels (mappings and lists); real configs use under 15
MAX_VALUES = 100_000  # scalars, lists and mappings, counted with aliases expanded

# Under these keys, mapping keys are names (field names, header names), not paths.
OPAQUE_KEYS = frozenset({"processors", "fields", "headers", "when", "parameters", "settings", "labels"})

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)(?::([?-]?)([^}]*))?\}")


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting depth and expanded values as it composes; knows the key it is in."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._path: list[str] = []
        self._values = 0
        self._weights: dict[int, int] = {}  # id(anchored node) -> values it expands to

    def _where(self) -> str:
        parts = [p for p in self._path if p]
        if len(parts) > 12:  # a key nested too deep: its start and its end say enough
            return f"{_join(parts[:6])}...{_join(parts[-4:])}"
        return _join(parts)

    def _count(self, values: int) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise ConfigError(self._where(), f"aliases expand the config to more than {MAX_VALUES} values")

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if isinstance(index, yaml.ScalarNode):
            self._path.append(str(index.value))
        elif isinstance(index, int):
            self._path.append(f"[{index}]")
        else:
            self._path.append("")  # the document root, or a mapping key being read
        try:
            if len(self._path) > MAX_DEPTH:
                raise ConfigError(self._where(), f"nested deeper than {MAX_DEPTH} levels")
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                target = self.anchors.get(event.anchor)
                if target is not None:
                    weight = self._weights.get(id(target))
                    if weight is None:
                        raise ConfigError(self._where(), f"alias *{event.anchor} is used inside the value it names")
                    self._count(weight)
                return super().compose_node(parent, index)
            start = self._values
            node = super().compose_node(parent, index)
            self._count(1)
            if event.anchor is not None:
                self._weights[id(node)] = self._values - start
            return node
        finally:
            self._path.pop()


def _join(parts: list[str]) -> str:
    return "".join(part if part.startswith("[") or not i else f".{part}" for i, part in enumerate(parts))


def load_yaml(text: str) -> Any:
    """One YAML document within the limits above; yaml.YAMLError or ConfigError when it is not."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_file(path: str | Path, expand: bool = True) -> dict[str, Any]:
    """Parse one config file into a nested mapping; errors name the file.

    `expand=False` keeps `${VAR}` references as written (for `export config`).
    """
    path = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError("", f"cannot read config file: {exc.strerror or exc}", path) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError("", f"config file is larger than {MAX_CONFIG_BYTES} bytes", path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(*_bad_utf8(raw, exc.start), path) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("", f"invalid YAML{where}: {problem}", path) from None
    except ConfigError as exc:
        raise exc.in_file(path) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a timestamp such as 2024-02-30
        raise ConfigError("", f"invalid YAML value: {exc}", path) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", "the top level must be a mapping of settings", path)
    try:
        return normalize(expand_vars(data, "", os.environ) if expand else data)
    except ConfigError as exc:
        raise exc.in_file(path) from None


def _bad_utf8(raw: bytes, offset: int) -> tuple[str, str]:
    """(key, reason) for a byte that is not UTF-8: the key is the one written on that line, if any."""
    line_start = raw.rfind(b"\n", 0, offset) + 1
    line_end = raw.find(b"\n", offset)
    line = raw[line_start:line_end if line_end >= 0 else len(raw)].decode("utf-8", "replace")
    key = re.match(r"\s*(?:-\s+)?([^:#'\"\s][^:#]*?)\s*:(?:\s|$)", line)
    number = raw.count(b"\n", 0, offset) + 1
    reason = f"not valid UTF-8 at line {number}, column {offset - line_start + 1} (byte {offset})"
    return (key.group(1) if key else ""), reason


def check_depth(tree: Any, key: str = "") -> None:
    """Refuse a tree nested deeper than MAX_DEPTH (-E can build one from a long dotted key)."""
    stack: list[tuple[Any, str, int]] = [(tree, key, 1)]
    while stack:
        node, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(where, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k), depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(node))


def expand_vars(value: Any, key: str, env: os._Environ[str] | dict[str, str]) -> Any:
    """Replace ${VAR}, ${VAR:default} and ${VAR:?message} in every string."""
    if isinstance(value, dict):
        return {k: expand_vars(v, f"{key}.{k}" if key else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_vars(v, f"{key}[{i}]", env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, mode, arg = match.group(1), match.group(2), match.group(3)
        if name in env:
            return env[name]
        if mode == "?":
            raise ConfigError(key, arg or f"environment variable {name} is not set")
        if arg is not None and match.group(0).find(":") >= 0:
            return arg
        raise ConfigError(key, f"environment variable {name} is not set and has no default (${{{name}:default}})")

    whole = _VAR.fullmatch(value)
    expanded = _VAR.sub(substitute, value)
    if whole:
        # A value that is one reference is parsed as YAML, as Beats does: ${PORTS:[80, 8080]}.
        try:
            return load_yaml(expanded) if expanded.strip() else expanded
        except (yaml.YAMLError, ValueError, TypeError, OverflowError):
            return expanded
        except ConfigError as exc:
            raise ConfigError(key, f"the value of ${{{whole.group(1)}}}: {exc.reason}") from None
    return expanded


def normalize(tree: dict[str, Any], opaque: bool = False) -> dict[str, Any]:
    """Split dotted keys into nested mappings and merge them (outside opaque sections)."""
    out: dict[str, Any] = {}
    for raw_key, value in tree.items():
        key = str(raw_key)
        parts = [key] if opaque else key.split(".")
        leaf = parts[-1]
        child_opaque = opaque or leaf in OPAQUE_KEYS
        if isinstance(value, dict):
            value = normalize(value, child_opaque)
        elif isinstance(value, list):
            value = [normalize(v, child_opaque) if isinstance(v, dict) and leaf != "processors" else v
                     for v in value]
        _put(out, parts, value, key)
    return out


def _put(tree: dict[str, Any], parts: list[str], value: Any, key: str) -> None:
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(key, f"'{part}' is both a value and a section")
        node = child
    leaf = parts[-1]
    if leaf in node and isinstance(node[leaf], dict) and isinstance(value, dict):
        merge(node[leaf], value)
    else:
        node[leaf] = value


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into `base` (in place): mappings merge, everything else replaces."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def apply_overrides(tree: dict[str, Any], overrides: list[str], expand: bool = True) -> dict[str, Any]:
    """-E key=value settings: dotted keys, YAML values; numeric segments index into lists.

    Errors name the setting and say it came from -E.
    """
    for item in overrides:
        try:
            _apply_override(tree, item, expand)
        except ConfigError as exc:
            raise ConfigError(exc.key, exc.reason, exc.file or "-E") from None
    try:
        check_depth(tree)
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.reason, "-E") from None
    return tree


def _apply_override(tree: dict[str, Any], item: str, expand: bool) -> None:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(item[:80], "an -E setting must look like key=value")
    if key.count(".") >= MAX_DEPTH:
        raise ConfigError(key[:80] + "...", f"nested deeper than {MAX_DEPTH} levels")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError, TypeError, OverflowError):
        value = raw
    except ConfigError as exc:
        inner = exc.key if not exc.key or exc.key.startswith("[") else f".{exc.key}"
        raise ConfigError(f"{key}{inner}", exc.reason) from None
    if expand:
        value = expand_vars(value, key, os.environ)
    node: Any = tree
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(key, f"'{part}' is not an index of the list at {'.'.join(parts[:i])}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(key, f"'{'.'.join(parts[:i])}' is a value, not a section")
        if last:
            if isinstance(value, dict) and isinstance(node.get(part), dict):
                merge(node[part], normalize(value))
            else:
                node[part] = normalize(value) if isinstance(value, dict) else value
        else:
            node = node.setdefault(part, {})
