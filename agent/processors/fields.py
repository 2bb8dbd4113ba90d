"""Dotted-path access to nested event dicts, as libbeat's MapStr does it."""

from __future__ import annotations

from typing import Any

MISSING: Any = object()


def get_field(event: dict[str, Any], path: str) -> Any:
    """The value at `path` ("http.response.status_code"), or MISSING.

    A key that itself contains dots (a header name) is found too: the longest
    matching key wins at each level.
    """
    node: Any = event
    if path in node:
        return node[path]
    parts = path.split(".")
    i = 0
    while i < len(parts):
        if not isinstance(node, dict):
            return MISSING
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            if key in node:
                node = node[key]
                i = j
                break
        else:
            return MISSING
    return node


def put_field(event: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = event
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def delete_field(event: dict[str, Any], path: str) -> bool:
    """Remove `path`; empty parents are removed too.  Returns whether it existed."""
    if path in event:
        del event[path]
        return True
    parts = path.split(".")
    trail: list[tuple[dict[str, Any], str]] = []
    node: Any = event
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False
        trail.append((node, part))
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        return False
    del node[parts[-1]]
    for parent, key in reversed(trail):
        if parent[key] == {}:
            del parent[key]
        else:
            break
    return True


def flatten(value: dict[str, Any], separator: str = ".", prefix: str = "") -> dict[str, Any]:
    """The leaves of a nested mapping by joined key ({"a": {"b": 1}} -> {"a.b": 1}), in order."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{separator}{key}" if prefix else str(key)
        if isinstance(item, dict):
            out.update(flatten(item, separator, name))
        else:
            out[name] = item
    return out
