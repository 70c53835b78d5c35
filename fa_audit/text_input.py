"""Small text inputs (threshold YAML, --arch-config files, JSON reports), read with
bounds: a regular file of reasonable size, YAML without aliases, nesting of bounded
depth. A billion-laughs YAML of 425 bytes would otherwise expand to gigabytes."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from .errors import InputError

MAX_DEPTH = 32
CONFIG_BYTES = 1 << 20
REPORT_BYTES = 256 << 20


def read_text(path: Path, what: str, limit: int) -> str:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError("does not exist", path) from None
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc.__class__.__name__})", path) from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"is a directory, not {what}", path)
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"is not a regular file (a FIFO, socket or device cannot be {what})", path)
    if info.st_size > limit:
        raise InputError(f"is {info.st_size} bytes, too large for {what} (at most {limit})", path)
    try:
        with path.open("rb") as fh:
            return fh.read(limit + 1).decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"is not UTF-8 text, so it cannot be {what}", path) from None
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc.__class__.__name__})", path) from None


def parse_yaml(text: str, path: Path | None) -> Any:
    """yaml.safe_load, refusing aliases and deep nesting before anything is built."""
    import yaml

    try:
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise InputError("uses YAML aliases (*name), which fa-audit does not accept", path)
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise InputError(f"nests deeper than {MAX_DEPTH} levels", path)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"is not valid YAML{where}", path) from None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(text: str, path: Path | None) -> Any:
    """json.loads without NaN, Infinity or numbers that overflow to them, and with bounded nesting."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise InputError("nests too deeply to be JSON fa-audit reads", path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"is not valid JSON (line {exc.lineno}: {exc.msg})", path) from None
    except ValueError as exc:
        raise InputError(f"is not valid JSON: {exc}", path) from None
    if _depth(value) > MAX_DEPTH:
        raise InputError(f"nests deeper than {MAX_DEPTH} levels", path)
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:40]} overflows a float")
    return value


def _depth(value: Any) -> int:
    stack, deepest = [(value, 1)], 0
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack += [(child, depth + 1) for child in children]
    return deepest
