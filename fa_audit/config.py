"""Thresholds of the three checks: defaults from the protocol paper, overridable in YAML."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from .errors import InputError
from .escape import printable, short
from .text_input import CONFIG_BYTES, parse_yaml, read_text


@dataclass(frozen=True)
class ScaleStability:
    max_block_growth: float = 50.0


@dataclass(frozen=True)
class ReferenceValidity:
    min_relative_grad_norm: float = 1.0e-7
    """The decision (Mode 1): the median of ‖g_l[i]‖ / ‖e_i‖, the BP gradient per unit of
    output error, below this means the reference collapsed with the stream."""
    min_grad_norm: float = 1.0e-7
    """The protocol's diagnostic (b), on the median ‖g_l‖ itself: reported beside the
    decision, never deciding alone (a small loss makes it small too: docs/choices.md)."""
    min_fp64_agreement: float = 0.999
    max_direction_stability: float = 0.30
    direction_stability_fails: bool = False
    direction_stability_batch: int = 64
    """Samples per minibatch whose mean gradient direction dir_stab compares."""


@dataclass(frozen=True)
class BaselineBudget:
    """How ``--fit-baseline`` trains the interface of a frozen-blocks baseline (AdamW);
    the defaults are the budget the sample ``frozen.pt`` was trained with."""

    epochs: int = 8
    lr: float = 2.0e-3
    weight_decay: float = 0.01
    batch_size: int = 64


@dataclass(frozen=True)
class DepthUtility:
    min_margin_pp: float = 2.0
    min_loss_reduction_pct: float = 10.0
    """Where the loss head's metric is the loss (mse, bce, a user's loss): the trained deep
    blocks must lower the mean eval loss of the frozen-blocks baseline by this percentage of it."""
    margin_confidence: float = 0.95
    """The margin's interval over the eval samples (paired with the baseline's on the same
    samples): it passes when the interval lies above min_margin_pp, fails below, else borderline."""
    min_credit_reach: float = 0.5
    null_z: float = 3.0
    first_deep_layer: int = 1
    """The hidden states h_first..h_L are the deep ones credit reach counts (h0 is the embedding's)."""
    min_rank_ratio: float = 0.1
    """A credit whose effective rank is below this fraction of the BP gradient's is reported
    as rank collapse (a finding, not a failure)."""
    baseline: BaselineBudget = field(default_factory=BaselineBudget)


@dataclass(frozen=True)
class NullCalibration:
    draws: int = 20
    samples: int = 1024
    """The null draws are measured on at most this many eval samples, spread evenly over
    the eval set (0: all of them); Γ itself always uses every sample."""
    max_draws: int = 320
    """A layer whose z interval straddles ``null_z`` gets more draws, doubling, up to this
    many in all (docs/measurements.md, "Borderline layers")."""
    max_walk_draws: int = 80
    """The same bound for methods whose every draw is a backward walk through the network
    (the FA family): a draw there costs a backward pass over the null's samples."""
    walk_samples: int = 128
    """The FA family's null uses at most this many of the ``samples`` (0: as many): its K
    draws are K backward walks over them, and the null's spread comes mostly from the
    draws of B, little from the samples (docs/measurements.md, "The null on a subsample")."""

    def samples_for(self, walks: bool) -> int:
        """The cap on the null's samples for a method whose draws are backward ``walks`` or
        not (0: every sample)."""
        if not walks or self.walk_samples == 0:
            return self.samples
        return min(self.samples, self.walk_samples) if self.samples else self.walk_samples


@dataclass(frozen=True)
class Perturbation:
    """The perturbation correlation ρ (docs/measurements.md): off unless nudges > 0, since
    a standard error of 0.03 takes about a thousand float64 forwards per layer."""

    nudges: int = 0
    max_se: float = 0.03
    """A ρ whose standard error is above this is not reported (give more nudges)."""


NULL_WORK_PER_SAMPLE = 100
"""The null's draws × samples may be at most this many times the eval samples (the audit's own pass)..."""
NULL_WORK_FLOOR = 400_000
"""...or this many, whichever is larger: the defaults reach 320 draws × 1024 samples at most."""


def bounded_null(calibration: NullCalibration, null_samples: int, samples: int) -> NullCalibration:
    """The null settings with draws and their bounds cut so that draws × null samples stays in
    proportion to the audit's pass, whatever a config file says (``max_draws: 100000`` at a
    borderline z, ``draws: 1000`` over every sample, ran for hours on a 63-byte YAML)."""
    most = max(2, max(NULL_WORK_PER_SAMPLE * samples, NULL_WORK_FLOOR) // max(null_samples, 1))
    return replace(
        calibration,
        draws=min(calibration.draws, most),
        max_draws=min(calibration.max_draws, most),
        max_walk_draws=min(calibration.max_walk_draws, most),
    )


@dataclass(frozen=True)
class Thresholds:
    scale_stability: ScaleStability = field(default_factory=ScaleStability)
    reference_validity: ReferenceValidity = field(default_factory=ReferenceValidity)
    depth_utility: DepthUtility = field(default_factory=DepthUtility)
    null_calibration: NullCalibration = field(default_factory=NullCalibration)
    perturbation: Perturbation = field(default_factory=Perturbation)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return asdict(self)

    def to_yaml(self) -> str:
        import yaml  # only here and for a --config file: 13-20 ms of every run's start-up otherwise

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_LOOSER = "thresholds looser than the protocol's"
_LOOSENED_BY: dict[tuple[str, str], int] = {
    ("scale_stability", "max_block_growth"): 1,
    ("reference_validity", "min_relative_grad_norm"): -1,
    ("reference_validity", "min_fp64_agreement"): -1,
    ("depth_utility", "min_margin_pp"): -1,
    ("depth_utility", "min_loss_reduction_pct"): -1,
    ("depth_utility", "margin_confidence"): -1,
    ("depth_utility", "min_credit_reach"): -1,
    ("depth_utility", "null_z"): -1,
    ("depth_utility", "first_deep_layer"): 0,
}
"""The gates, and the way a value loosens each: 1 higher, −1 lower, 0 any change. A lower margin
confidence narrows the margin's interval, so a margin the protocol leaves borderline passes; another
first deep layer changes which layers credit reach counts (h0, the embedding's, is often the best
aligned). Left out: what decides nothing by default (the protocol's floor on ‖g‖ itself, direction
stability, the rank note) and the null's draws and samples, which set z's precision, not its bar
(a layer they leave borderline is counted neither way)."""


def looser_than_protocol(thresholds: Thresholds) -> str | None:
    """A note naming each gate ``thresholds`` set looser than the protocol's defaults, with both values;
    None when none is. A verdict under them is not the protocol's, and a thresholds file is the one input
    a pull request can loosen a CI gate with: the report says so wherever it is read."""
    ours, protocol = thresholds.to_dict(), Thresholds().to_dict()
    changed = []
    for (section, key), way in _LOOSENED_BY.items():
        value, default = ours[section][key], protocol[section][key]
        if (value - default) * way > 0 or (way == 0 and value != default):
            changed.append(f"{section}.{key} {value:g} (the protocol's {default:g})")
    if not changed:
        return None
    return f"{_LOOSER}: {', '.join(changed)}; a TRUST under them is not the protocol's"


def looser_notes(notes: Iterable[str]) -> list[str]:
    """Those of a report's ``notes`` that :func:`looser_than_protocol` wrote."""
    return [n for n in notes if n.startswith(_LOOSER)]


# Values that must be positive; a few may be zero (a margin of 0 pp, a reach of 0).
_MAY_BE_ZERO = {"min_margin_pp", "min_credit_reach", "null_z", "weight_decay", "samples", "walk_samples",
                "nudges", "first_deep_layer", "min_rank_ratio"}  # fmt: skip
_AT_MOST_ONE = {"min_fp64_agreement", "max_direction_stability", "min_credit_reach", "min_rank_ratio"}
_BELOW_ONE = {"margin_confidence"}
# Bounds that keep memory and time in proportion: K null draws cost K credit passes.
_INT_MAX = {
    "draws": 1000,
    "max_draws": 100_000,
    "max_walk_draws": 100_000,
    "direction_stability_batch": 1 << 20,
    "epochs": 10_000,
    "batch_size": 1 << 20,
    "samples": 1 << 40,
    "walk_samples": 1 << 40,
    "nudges": 1 << 16,
    "first_deep_layer": 1 << 16,
}
_INT_MIN = {"epochs": 1, "batch_size": 1, "samples": 0, "walk_samples": 0, "nudges": 0, "first_deep_layer": 0}


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
            raise InputError(f"{where} must be true or false, not {short(value)}")
        return value
    if isinstance(value, str):
        value = _yaml12_number(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where} must be a number, not {short(value)}")
    try:
        value = float(value) if not isinstance(want, int) else value
        float(value)
    except OverflowError:
        raise InputError(f"{where} is too large a number ({short(value)})") from None
    low = _INT_MIN.get(key, 2)
    if isinstance(want, int) and (not float(value).is_integer() or not low <= value <= _INT_MAX[key]):
        raise InputError(f"{where} must be a whole number from {low} to {_INT_MAX[key]}, not {short(value)}")
    if not math.isfinite(value) or value < 0 or (value == 0 and key not in _MAY_BE_ZERO):
        raise InputError(f"{where} must be a finite positive number, not {short(value)}")
    if key in _AT_MOST_ONE and value > 1:
        raise InputError(f"{where} must be at most 1, not {short(value)}")
    if key in _BELOW_ONE and value >= 1:
        raise InputError(f"{where} must be below 1, not {short(value)}")
    return type(want)(value)


def _name(key: object) -> str:
    """A YAML key as the user wrote it, escaped and cut short."""
    return printable(str(key))[:60]


def merge(base: Thresholds, overrides: dict[str, Any]) -> Thresholds:
    """``base`` with ``overrides`` (the parsed YAML) applied; unknown keys are errors."""
    merged: Thresholds = _merged(base, overrides, "")
    return merged


def _merged(current: Any, values: Any, where: str) -> Any:
    """A (nested) dataclass section with the mapping ``values`` applied."""
    if not isinstance(values, dict):
        raise InputError(f"section {where or '(top)'} must be a mapping of keys to values")
    known = {f.name: getattr(current, f.name) for f in fields(current)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            kind = "section" if not where else "key"
            place = f"{where}.{_name(key)}" if where else f"'{_name(key)}'"
            raise InputError(f"unknown {kind} {place} (known: {', '.join(known)})")
        path = f"{where}.{key}" if where else key
        if is_dataclass(known[key]):
            changes[key] = _merged(known[key], value, path)
        else:
            changes[key] = _coerce(where, key, known[key], value)
    return replace(current, **changes)


def load_thresholds(path: Path | None) -> Thresholds:
    """The defaults, merged with the YAML file at ``path`` when one is given."""
    if path is None:
        return Thresholds()
    data = parse_yaml(read_text(path, "a YAML config", CONFIG_BYTES), path)
    if data is None:
        return Thresholds()
    if not isinstance(data, dict):
        raise InputError("must be a YAML mapping of sections (scale_stability: ...)", path)
    try:
        return merge(Thresholds(), data)
    except InputError as exc:
        raise InputError(exc.problem, path) from None
