"""Libbeat conditions (`when:`): equals, contains, regexp, range, network, has_fields, and, or, not.

A condition arrives as YAML, possibly with dotted keys
(`not.equals.type: flow`, `equals.http.response.status_code: 200`) or nested
mappings; both are flattened to dotted paths first, so either spelling works.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from agent.config.typed import ConfigError
from agent.events.direction import contains as network_contains
from agent.events.direction import parse_networks
from agent.processors.fields import MISSING, flatten, get_field

Condition = Callable[[dict[str, Any]], bool]
OPERATORS = ("equals", "contains", "regexp", "range", "network", "has_fields", "and", "or", "not")


def build_condition(raw: Any, where: str) -> Condition:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(where, "a condition must be a mapping such as {equals: {field: value}}")
    parts: list[Condition] = []
    grouped: dict[str, Any] = {}
    for key, value in raw.items():
        op, _, rest = str(key).partition(".")
        if op not in OPERATORS:
            raise ConfigError(f"{where}.{key}", f"unknown condition '{op}' (use one of {', '.join(OPERATORS)})")
        if rest:
            value = {rest: value}
        if op in grouped and isinstance(grouped[op], dict) and isinstance(value, dict):
            grouped[op] = {**grouped[op], **value}
        else:
            grouped[op] = value
    for op, value in grouped.items():
        parts.append(_build_op(op, value, f"{where}.{op}"))
    if len(parts) == 1:
        return parts[0]
    return lambda event: all(p(event) for p in parts)


def _build_op(op: str, value: Any, where: str) -> Condition:
    if op in ("and", "or"):
        if not isinstance(value, list) or not value:
            raise ConfigError(where, f"'{op}' takes a list of conditions")
        subs = [build_condition(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if op == "and":
            return lambda event: all(s(event) for s in subs)
        return lambda event: any(s(event) for s in subs)
    if op == "not":
        sub = build_condition(value, where)
        return lambda event: not sub(event)
    if op == "has_fields":
        names = value if isinstance(value, list) else [value]
        return lambda event: all(get_field(event, str(n)) is not MISSING for n in names)
    if not isinstance(value, dict) or not value:
        raise ConfigError(where, f"'{op}' takes a mapping of field: value")
    if op == "range":
        return _range(value, where)
    fields = flatten(value)
    checks: list[Condition] = []
    for name, expected in fields.items():
        if op == "equals":
            checks.append(_equals(name, expected))
        elif op == "contains":
            checks.append(_contains(name, str(expected)))
        elif op == "regexp":
            try:
                pattern = re.compile(str(expected))
            except re.error as exc:
                raise ConfigError(f"{where}.{name}", f"invalid regular expression: {exc}") from None
            checks.append(_regexp(name, pattern))
        elif op == "network":
            try:
                nets = parse_networks(expected if isinstance(expected, list) else [expected])
            except ValueError as exc:
                raise ConfigError(f"{where}.{name}", str(exc)) from None
            checks.append(_network(name, nets))
    return lambda event: all(c(event) for c in checks)


def _equals(name: str, expected: Any) -> Condition:
    def check(event: dict[str, Any]) -> bool:
        actual = get_field(event, name)
        if actual is MISSING:
            return False
        if isinstance(expected, bool) or isinstance(actual, bool):
            return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
        if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
            return actual == expected
        if isinstance(actual, list):
            return any(str(a) == str(expected) for a in actual)
        return str(actual) == str(expected)

    return check


def _contains(name: str, needle: str) -> Condition:
    def check(event: dict[str, Any]) -> bool:
        actual = get_field(event, name)
        if isinstance(actual, str):
            return needle in actual
        if isinstance(actual, list):
            return any(isinstance(a, str) and needle in a for a in actual)
        return False

    return check


def _regexp(name: str, pattern: re.Pattern[str]) -> Condition:
    def check(event: dict[str, Any]) -> bool:
        actual = get_field(event, name)
        if isinstance(actual, str):
            return pattern.search(actual) is not None
        if isinstance(actual, list):
            return any(isinstance(a, str) and pattern.search(a) for a in actual)
        return False

    return check


def _network(name: str, nets: list[Any]) -> Condition:
    def check(event: dict[str, Any]) -> bool:
        actual = get_field(event, name)
        values = actual if isinstance(actual, list) else [actual]
        for value in values:
            if not isinstance(value, str):
                continue
            try:
                ip = ipaddress.ip_address(value)
            except ValueError:
                continue
            if network_contains(nets, ip):
                return True
        return False

    return check


_BOUNDS = {"lt": float.__lt__, "lte": float.__le__, "gt": float.__gt__, "gte": float.__ge__}


def _range(value: dict[str, Any], where: str) -> Condition:
    flat = flatten(value)
    limits: dict[str, list[tuple[Callable[[float, float], bool], float]]] = {}
    for dotted, bound in flat.items():
        name, _, op = dotted.rpartition(".")
        if op not in _BOUNDS or not name:
            raise ConfigError(f"{where}.{dotted}", "a range needs field.lt, .lte, .gt or .gte")
        try:
            number = float(bound)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.{dotted}", f"expected a number, got {bound!r}") from None
        limits.setdefault(name, []).append((_BOUNDS[op], number))

    def check(event: dict[str, Any]) -> bool:
        for name, tests in limits.items():
            actual = get_field(event, name)
            if isinstance(actual, bool) or not isinstance(actual, (int, float)):
                return False
            if not all(test(float(actual), number) for test, number in tests):
                return False
        return True

    return check
