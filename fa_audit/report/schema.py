"""The shipped report schema, and a validator for the part of JSON Schema (draft
2020-12) it uses, so that ``summarize`` can check reports written elsewhere without
a runtime dependency. Tests hold it to agree with the reference implementation."""

from __future__ import annotations

import json
import re
from functools import cache
from importlib.resources import files
from typing import Any

_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


@cache
def schema() -> dict[str, Any]:
    """The report schema (read once; treat it as read-only)."""
    loaded: dict[str, Any] = json.loads(files("fa_audit.report").joinpath("report.schema.json").read_text("utf-8"))
    return loaded


def first_violation(value: Any, node: dict[str, Any], root: dict[str, Any], where: str = "") -> str | None:
    """Where ``value`` first breaks ``node`` (a JSON path and the rule), or None."""
    if "$ref" in node:
        return first_violation(value, _resolve(root, node["$ref"]), root, where)
    at = where or "the report"
    types = node.get("type")
    if types is not None and not any(_TYPES[t](value) for t in ([types] if isinstance(types, str) else types)):
        return f"{at} must be of type {' or '.join([types] if isinstance(types, str) else types)}"
    if "const" in node and not _same(value, node["const"]):
        return f"{at} must be {node['const']!r}"
    if "enum" in node and not any(_same(value, allowed) for allowed in node["enum"]):
        return f"{at} must be one of {', '.join(map(str, node['enum']))}"
    if "oneOf" in node and sum(first_violation(value, form, root, where) is None for form in node["oneOf"]) != 1:
        return f"{at} must take exactly one of its {len(node['oneOf'])} forms"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in node and value < node["minimum"]:
            return f"{at} must be at least {node['minimum']}"
        if "exclusiveMinimum" in node and value <= node["exclusiveMinimum"]:
            return f"{at} must be above {node['exclusiveMinimum']}"
        if "maximum" in node and value > node["maximum"]:
            return f"{at} must be at most {node['maximum']}"
    if isinstance(value, str) and "pattern" in node and re.search(node["pattern"], value) is None:
        return f"{at} does not match {node['pattern']}"
    if isinstance(value, dict):
        return _object_violation(value, node, root, where)
    if isinstance(value, list):
        return _array_violation(value, node, root, where)
    return None


def _object_violation(value: dict[str, Any], node: dict[str, Any], root: dict[str, Any], where: str) -> str | None:
    missing = [k for k in node.get("required", []) if k not in value]
    if missing:
        return f"{where or 'the report'} lacks {', '.join(repr(k) for k in missing)}"
    properties = node.get("properties", {})
    extra = node.get("additionalProperties", True)
    for key, item in value.items():
        path = f"{where}.{key}" if where else key
        if key in properties:
            found = first_violation(item, properties[key], root, path)
        elif extra is False:
            found = f"{path} is not a field of the report"
        elif isinstance(extra, dict):
            found = first_violation(item, extra, root, path)
        else:
            found = None
        if found is not None:
            return found
    return None


def _array_violation(value: list[Any], node: dict[str, Any], root: dict[str, Any], where: str) -> str | None:
    if len(value) < node.get("minItems", 0):
        return f"{where} needs at least {node['minItems']} item(s)"
    if "maxItems" in node and len(value) > node["maxItems"]:
        return f"{where} holds more than {node['maxItems']} item(s)"
    for i, item in enumerate(value):
        if "items" in node and (found := first_violation(item, node["items"], root, f"{where}[{i}]")) is not None:
            return found
    return None


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true and 1 differ (Python's == says they are equal); 1 and 1.0 do not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    resolved: dict[str, Any] = node
    return resolved
