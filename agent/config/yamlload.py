"""Reading packetbeat.yml: YAML, `${VAR:default}` expansion, dotted keys, and -E overrides.

Packetbeat's dialect writes `output.file.path: x` and `output: {file: {path: x}}`
interchangeably; both become the same nested mapping here.  Dotted keys are
kept as written inside processor definitions, `fields` and HTTP headers,
where a dot is part of a field or header name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from agent.config.typed import ConfigError

# Under these keys, mapping keys are names (field names, header names), not paths.
OPAQUE_KEYS = frozenset({"processors", "fields", "headers", "when", "parameters", "settings", "labels"})

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)(?::([?-]?)([^}]*))?\}")


def read_file(path: str | Path) -> dict[str, Any]:
    """Parse one config file into a nested mapping; errors name the file."""
    path = str(path)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError("", f"cannot read config file: {exc.strerror or exc}", path) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("", f"invalid YAML{where}: {problem}", path) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", "the top level must be a mapping of settings", path)
    try:
        return normalize(expand_vars(data, "", os.environ))
    except ConfigError as exc:
        raise exc.in_file(path) from None


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
            return yaml.safe_load(expanded) if expanded.strip() else expanded
        except yaml.YAMLError:
            return expanded
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


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """-E key=value settings: dotted keys, YAML values; numeric segments index into lists."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(item, "an -E setting must look like key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
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
    return tree
