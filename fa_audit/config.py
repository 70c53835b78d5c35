"""Thresholds of the three checks: defaults from the protocol paper, overridable in YAML."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError


@dataclass(frozen=True)
class ScaleStability:
    max_block_growth: float = 50.0


@dataclass(frozen=True)
class ReferenceValidity:
    min_grad_norm: float = 1.0e-7
    min_fp64_agreement: float = 0.999
    max_direction_stability: float = 0.30
    direction_stability_fails: bool = False
    direction_stability_batch: int = 64
    """Samples per minibatch whose mean gradient direction dir_stab compares."""


@dataclass(frozen=True)
class DepthUtility:
    min_margin_pp: float = 2.0
    min_credit_reach: float = 0.5
    null_z: float = 3.0


@dataclass(frozen=True)
class NullCalibration:
    draws: int = 20


@dataclass(frozen=True)
class Thresholds:
    scale_stability: ScaleStability = field(default_factory=ScaleStability)
    reference_validity: ReferenceValidity = field(default_factory=ReferenceValidity)
    depth_utility: DepthUtility = field(default_factory=DepthUtility)
    null_calibration: NullCalibration = field(default_factory=NullCalibration)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# Values that must be positive; a few may be zero (a margin of 0 pp, a reach of 0).
_MAY_BE_ZERO = {"min_margin_pp", "min_credit_reach", "null_z"}
_AT_MOST_ONE = {"min_fp64_agreement", "max_direction_stability", "min_credit_reach"}


def _yaml12_number(text: str) -> float | str:
    """PyYAML follows YAML 1.1, where `1.0e9` (no exponent sign) is a string; YAML 1.2
    and every researcher read it as a number."""
    try:
        return float(text)
    except ValueError:
        return text


def _coerce(section: str, key: str, want: Any, value: Any) -> Any:
    where = f"{section}.{key}"
    if isinstance(want, bool):
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true or false, not {value!r}")
        return value
    if isinstance(value, str):
        value = _yaml12_number(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where} must be a number, not {value!r}")
    if isinstance(want, int) and (not float(value).is_integer() or value < 2):
        raise InputError(f"{where} must be a whole number of at least 2, not {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and key not in _MAY_BE_ZERO):
        raise InputError(f"{where} must be a finite positive number, not {value!r}")
    if key in _AT_MOST_ONE and value > 1:
        raise InputError(f"{where} must be at most 1, not {value!r}")
    return type(want)(value)


def merge(base: Thresholds, overrides: dict[str, Any]) -> Thresholds:
    """``base`` with ``overrides`` (the parsed YAML) applied; unknown keys are errors."""
    sections = {f.name: getattr(base, f.name) for f in fields(base)}
    for name, values in overrides.items():
        if name not in sections:
            raise InputError(f"unknown section {name!r} (known: {', '.join(sections)})")
        if not isinstance(values, dict):
            raise InputError(f"section {name!r} must be a mapping of keys to values")
        current = sections[name]
        known = {f.name: getattr(current, f.name) for f in fields(current)}
        for key in values:
            if key not in known:
                raise InputError(f"unknown key {name}.{key} (known: {', '.join(known)})")
        sections[name] = replace(current, **{k: _coerce(name, k, known[k], v) for k, v in values.items()})
    return Thresholds(**sections)


def load_thresholds(path: Path | None) -> Thresholds:
    """The defaults, merged with the YAML file at ``path`` when one is given."""
    if path is None:
        return Thresholds()
    if not path.is_file():
        raise InputError("does not exist" if not path.exists() else "is not a file", path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("is not a UTF-8 text file, so it cannot be a YAML config", path) from None
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc.__class__.__name__})", path) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"is not valid YAML{where}", path) from None
    if data is None:
        return Thresholds()
    if not isinstance(data, dict):
        raise InputError("must be a YAML mapping of sections (scale_stability: ...)", path)
    try:
        return merge(Thresholds(), data)
    except InputError as exc:
        raise InputError(exc.problem, path) from None
