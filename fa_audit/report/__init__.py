"""The typed result of an audit: what the library returns and every output renders."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from ..config import Thresholds
from ..exit_codes import ExitCode
from ..measure.null_band import closed_interval, drawn_interval

SCHEMA_VERSION = 6
READABLE_VERSIONS = (2, 3, 4, 5, 6)
"""Versions ``summarize`` reads: a version 2 report (no g_rel, no margin error) is judged as it was then."""
INTERVAL_CONFIDENCE = 0.95
"""The confidence of a report's intervals: the medians' (‖h‖, growth, ‖g‖, ‖g‖/‖e‖: distribution-free) and
dir_stab's (its jackknife error times Student's t), what another eval set of this size could move them to,
as the depth margin's interval is; and the early warning's forecast."""


def interval_said(interval: tuple[float, float], confidence: float = INTERVAL_CONFIDENCE) -> str:
    """'95 % interval 1.66e+06 … 2.15e+06', as every finding says an interval."""
    return f"{100 * confidence:g} % interval {interval[0]:.3g} … {interval[1]:.3g}"


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_ASSESSED = "not_assessed"


class Verdict(StrEnum):
    TRUST = "TRUST"
    WALK_BACK = "WALK_BACK"
    INCOMPLETE = "INCOMPLETE"

    @property
    def exit_code(self) -> ExitCode:
        return {
            Verdict.TRUST: ExitCode.TRUST,
            Verdict.WALK_BACK: ExitCode.WALK_BACK,
            Verdict.INCOMPLETE: ExitCode.INCOMPLETE,
        }[self]


@dataclass(frozen=True)
class LayerStats:
    """Per-layer measurements (docs/measurements.md); None where not defined or refused."""

    name: str
    module: str
    h_norm: float
    growth: float | None
    g_norm: float
    cos: float | None
    null_mean: float | None
    null_std: float | None
    z: float | None
    dir_stab: float | None
    fp64_agree: float | None
    """Mean row-cosine of the float32 gradient with a float64 recomputation (one batch)."""
    fp64_agree_min: float | None = None
    """The least agreeing sample of that batch."""
    fp64_agree_alone: float | None = None
    """The same rows' float32 gradients recomputed as one batch of their own, against float64
    (measured where one of those rows agrees below the threshold): as low as ``fp64_agree``
    where float32 itself rounds them off (an exploded stream), near 1 where the audit's batch
    gave them a different backward."""
    fp64_agree_spot: float | None = None
    """The mean agreement on up to 32 rows drawn at random (fresh entropy) from the whole pass,
    their float32 gradients as the audit computed them in their own batches: it varies between
    runs, and fails reference validity only when it lies below every row of the first batch."""
    fp64_agree_spot_alone: float | None = None
    """The same rows' float32 gradients recomputed as one batch of their own, against float64
    (measured where one of those rows agrees below the threshold; a rank with none counts its rows
    as they agreed): as low as ``fp64_agree_spot`` where float32 itself rounds them off (an
    exploded stream), near 1 where the audit's batches gave them a different backward."""
    grad_check: float | None = None
    """Relative error of autograd's float64 gradient against float64 finite differences (the
    proof that the reference is backprop); None where h_l could not be nudged."""
    width: int | None = None
    """h_l's flattened width (units per sample)."""
    g_rel: float | None = None
    """Median over samples of ‖g_l[i]‖ / ‖e_i‖, the gradient per unit of output error: small
    when the reference collapsed with the stream (Mode 1), not when the loss is merely small."""
    refused: str | None = None
    null_draws: int | None = None
    """How many null draws μ and σ rest on: more than the pass's where the decision against
    ``null_z`` needed them (fa_audit/measure/null_band.py); None where the null is in closed form."""
    null_std_range: tuple[float, float] | None = None
    """Where the null is in closed form (DFA, DRTP: fa_audit/measure/null_closed.py), μ is 0, the
    exact σ lies in this range and ``null_std`` is its middle."""
    null_std_sample: float | None = None
    """Where the null was drawn on fewer samples than Γ's (``null_samples``): the spread of the draws'
    means over those samples, which ``null_std`` carries to Γ's (docs/measurements.md, "The null on a
    subsample"); z's interval widens by their ratio. None where the null is on every sample."""
    zero_norm_rows: int = 0
    """Samples left out of ``cos`` because the credit or gradient was exactly zero."""
    cos_se: float | None = None
    """Γ's standard error over the eval samples: the per-sample cosines' standard deviation over
    √n, n the rows it is the mean of (what another eval set of this size would move Γ by, one σ)."""
    perturbation_corr: float | None = None
    """Correlation of <c_l, δ> with the loss change the nudge δ causes (first batch); None unless
    ``perturbation.nudges`` asked for it and its standard error is at most ``perturbation.max_se``."""
    perturbation_corr_se: float | None = None
    """Its standard error: a delete-one-sample jackknife over the nudged samples."""
    perturbation_nudges: int | None = None
    """The nudges ρ rests on."""
    perturbation_step: float | None = None
    """Their norm relative to each sample's ‖h_l‖: the first of 1e-3, 1e-5, 1e-7 at which the
    positive control reads the loss as linear (≥ 0.99), else the last tried."""
    perturbation_corr_pos: float | None = None
    """The same for the BP gradient (positive control, ≈ 1)."""
    perturbation_corr_neg: float | None = None
    """The same for an independent random vector (negative control, ≈ 0)."""
    perturbation_corr_neg_se: float | None = None
    """The negative control's standard error (0 within it is what a healthy measurement shows)."""
    credit_rank: float | None = None
    bp_rank: float | None = None
    rank_ratio: float | None = None
    """Effective rank of the credit matrix over that of the BP-gradient matrix."""
    weight_angle_deg: float | None = None
    """FA family: angle between W and B of the layers inside this hidden module."""
    weight_ratio: float | None = None
    """FA family: ‖B‖ / ‖W‖ of those layers."""
    feedback_unused: bool | None = None
    """FA family: every B inside this hidden module is one no credit goes through (the layers
    before the first hidden state: B only carries the error to the input), so no angle is given."""
    dir_stab_se: float | None = None
    """dir_stab's standard error: a delete-a-group jackknife over its minibatches (eight groups)."""
    h_norm_interval: tuple[float, float] | None = None
    """The medians' 95 % intervals over the eval samples, distribution-free (order statistics): what
    another eval set of this size could move each median to. None in a report written before them,
    below six samples, or where a value is not finite."""
    growth_interval: tuple[float, float] | None = None
    g_norm_interval: tuple[float, float] | None = None
    g_rel_interval: tuple[float, float] | None = None
    dir_stab_interval: tuple[float, float] | None = None
    """dir_stab ± Student's t (on the jackknife's groups less one) times its standard error, 95 %: what
    reference validity decides on where ``direction_stability_fails`` is set."""
    credit_rank_se: float | None = None
    """The effective ranks' and their ratio's standard errors over the rows they are measured on: a
    delete-a-group jackknife (four groups of rows)."""
    bp_rank_se: float | None = None
    rank_ratio_se: float | None = None
    rank_ratio_interval: tuple[float, float] | None = None
    """rank_ratio's 95 % interval, ratio · exp(± t · se / ratio), t Student's on 3 degrees of freedom (the
    groups less one): what the rank-collapse note decides on."""

    @property
    def z_interval(self) -> tuple[float, float] | None:
        """The 99.9 % interval of ``z`` given its draws, or the range the closed form's exact σ
        gives it (None without a z, or with neither: a report written before either)."""
        if self.z is None:
            return None
        if self.null_draws is not None:
            return drawn_interval(self.z, self.null_draws, self.null_std, self.null_std_sample)
        if self.null_std_range is not None and self.cos is not None and self.null_mean is not None:
            return closed_interval(self.cos - self.null_mean, *self.null_std_range)
        return None


def deep_mean(cosines: list[float | None]) -> float | None:
    """Deep Γ: the mean of Γ_l over h1..hL (``cosines`` from h0 on), where every one of them has its Γ."""
    deep = cosines[1:]
    return math.fsum(c for c in deep if c is not None) / len(deep) if deep and None not in deep else None


@dataclass(frozen=True)
class Aggregate:
    """The headline Γ (mean over layers) and how much other aggregations move it (pitfall 5, docs/pitfalls.md)."""

    headline: float | None
    strategies: dict[str, float | None]
    headline_se: float | None = None
    """The headline's standard error over the eval samples (:meth:`AggregationSums.headline_se`)."""
    deep: float | None = None
    """Deep Γ, the mean of Γ_l over h1..hL (what depth utility is about); None where one has no Γ."""
    deep_se: float | None = None
    """Its standard error over the eval samples (:meth:`AggregationSums.deep_se`)."""

    @property
    def spread(self) -> float | None:
        values = [v for v in self.strategies.values() if v is not None]
        return max(values) - min(values) if values else None


@dataclass(frozen=True)
class Measurements:
    layers: list[LayerStats]
    accuracy: float
    """The task metric's value: accuracy for classification, the mean loss for a head whose
    metric is the loss (``metric``)."""
    samples: int
    aggregate: Aggregate
    checkpoint_dtype: str
    saturated_fraction: float = 0.0
    """Eval samples with 1 - p_max < 1e-7, where a float32 softmax returns rounding noise."""
    hits: Any = field(default=None, repr=False, compare=False)
    """Per sample, whether the top class is the label (a bool tensor in eval order; not in the
    JSON): depth utility pairs it with the baseline's on the same samples."""
    majority_fraction: float = 0.0
    """The share of eval samples with the most common label: the accuracy of always answering it."""
    constant_loss: float | None = None
    """For a loss metric, the mean loss of the best constant output (mse: each output's mean
    target; bce: each output's label frequency); None where the head knows none."""
    perplexity: float | None = None
    """For a head over tokens, exp of the mean loss over every unmasked token of the eval set."""
    loss_head: str = "cross_entropy"
    metric: str = "accuracy"
    """``accuracy`` (higher is better) or ``loss`` (the head's mean loss, lower is better)."""
    input_grad_check: float | None = None
    """The reference proof's error at the model's input (None for integer inputs): it vouches
    for a state that cannot be nudged alone (in reference validity's values, not the layers)."""
    metric_se: float | None = None
    """The metric's standard error over the eval samples: the per-sample scores' (hits, or losses)
    standard deviation over √n; None below two samples."""


CHECK_SCORE = {Status.PASS: 1.0, Status.NOT_ASSESSED: 0.5, Status.FAIL: 0.0}
"""A check's status as a logged number (``fa_audit/check/<name>``): ``EarlyStopping(mode="max")``
or ``ModelCheckpoint(monitor=..., mode="max")`` can act on it."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    values: dict[str, Any]
    thresholds: dict[str, Any]
    messages: list[str] = field(default_factory=list)
    """One sentence per failure or reason for not assessing."""
    notes: list[str] = field(default_factory=list)
    """Findings that do not change the status (sub-modes, precision warnings)."""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}


@dataclass(frozen=True)
class BaselineInfo:
    """The frozen-random-blocks baseline that depth utility's margin is measured against."""

    source: str
    """``checkpoint`` (evaluated here on the same eval data) or ``supplied`` (a number the user gave)."""
    accuracy: float
    path: str | None = None
    deep_blocks_at_init: bool | None = None
    """Whether its deep blocks equal the adapter's seeded initialisation (None: no ``meta.seed`` to rebuild it)."""
    margin_se_pp: float | None = None
    """Standard error of the margin over the eval samples, in pp (fa_audit/checks/margin.py); None in older reports."""
    paired: bool | None = None
    """Whether that error pairs the two models' per-sample results on the same samples."""
    discordant: list[int] | None = None
    """Paired: [samples only the model gets right, samples only the baseline gets right]."""
    hits: Any = field(default=None, repr=False, compare=False)
    """Per sample, whether the baseline's top class is the label (a bool tensor; not in the JSON)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "hits"}


SCALAR_MEASURES = ("cos", "cos_se", "z", "g_norm", "growth", "credit_rank", "credit_rank_se")


@dataclass(frozen=True)
class AuditReport:
    checkpoint: str
    arch: str
    method: str
    inputs: dict[str, str | None]
    """Path of every file read -> its SHA-256 (None: a function of the user's code, ``--data module:...``)."""
    thresholds: Thresholds
    settings: dict[str, Any]
    measurements: Measurements
    baseline: BaselineInfo | None
    checks: list[CheckResult]
    verdict: Verdict
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    """The checkpoint's ``meta`` (epoch, seed, data, ...), JSON values only."""
    loading: dict[str, Any] = field(default_factory=dict)
    """What was done to the file's keys: container entry, prefix stripped, renames,
    feedback convention, and which entry became which layer's feedback."""

    @property
    def exit_code(self) -> ExitCode:
        return self.verdict.exit_code

    @property
    def baseline_accuracy(self) -> float | None:
        return None if self.baseline is None else self.baseline.accuracy

    @property
    def modes(self) -> list[str]:
        """The protocol's failure modes the checks found: ``mode_1`` (reference collapse),
        ``mode_2`` (no depth utility)."""
        return sorted({str(c.values["mode"]) for c in self.checks if c.values.get("mode")})

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def layer(self, name: str) -> LayerStats:
        return next(layer for layer in self.measurements.layers if layer.name == name)

    def scalars(self) -> dict[str, float]:
        """The numbers a training loop logs, flat: ``fa_audit/<measure>/<layer>`` (cos, cos_se, z,
        g_norm, growth, credit_rank, credit_rank_se, per hidden state h0..hL; absent where not defined),
        ``fa_audit/accuracy`` (``fa_audit/loss`` where the loss head's metric is the loss) and its
        standard error ``fa_audit/accuracy_se``, ``fa_audit/aggregate`` and ``fa_audit/aggregate_se``,
        ``fa_audit/check/<check>`` (pass 1, not assessed 0.5, fail 0) and
        ``fa_audit/exit_code``. Made for TensorBoard's ``add_scalar``,
        ``wandb.log``, MLflow's ``log_metrics``, Lightning's loggers."""
        out: dict[str, float] = {f"fa_audit/{self.measurements.metric}": self.measurements.accuracy}
        if self.measurements.metric_se is not None:
            out[f"fa_audit/{self.measurements.metric}_se"] = self.measurements.metric_se
        for layer in self.measurements.layers:
            for measure in SCALAR_MEASURES:
                value = getattr(layer, measure)
                if value is not None and math.isfinite(value):
                    out[f"fa_audit/{measure}/{layer.name}"] = float(value)
        aggregate = self.measurements.aggregate
        if aggregate.headline is not None:
            out["fa_audit/aggregate"] = aggregate.headline
        if aggregate.headline_se is not None:
            out["fa_audit/aggregate_se"] = aggregate.headline_se
        for key, value in (("deep", aggregate.deep), ("deep_se", aggregate.deep_se)):
            if value is not None:
                out[f"fa_audit/{key}"] = value
        for check in self.checks:  # a number a monitor can compare: pass 1, not assessed 0.5, fail 0
            out[f"fa_audit/check/{check.name}"] = CHECK_SCORE[check.status]
        out["fa_audit/exit_code"] = float(self.exit_code)
        return out

    def to_dict(self) -> dict[str, Any]:
        from .. import __version__

        m = self.measurements
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "fa-audit", "version": __version__},
            "checkpoint": self.checkpoint,
            "arch": self.arch,
            "method": self.method,
            "meta": self.meta,
            "inputs": [{"path": p, "sha256": h} for p, h in self.inputs.items()],
            "config": self.thresholds.to_dict(),
            "settings": self.settings,
            "samples": m.samples,
            "checkpoint_dtype": m.checkpoint_dtype,
            "accuracy": m.accuracy if m.metric == "accuracy" else None,
            "loss_head": m.loss_head,
            "metric": _metric_dict(m),
            "saturated_fraction": m.saturated_fraction,
            "majority_fraction": m.majority_fraction,
            "baseline_accuracy": self.baseline_accuracy,
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "aggregate": {
                "headline": m.aggregate.headline,
                "headline_se": m.aggregate.headline_se,
                "deep": m.aggregate.deep,
                "deep_se": m.aggregate.deep_se,
                "label": "aggregate: mean over layers of per-sample mean cosine",
                "strategies": m.aggregate.strategies,
                "spread": m.aggregate.spread,
            },
            "layers": [_layer_dict(layer) for layer in m.layers],
            "checks": [c.to_dict() for c in self.checks],
            "verdict": self.verdict.value,
            "modes": self.modes,
            "exit_code": int(self.exit_code),
            "notes": self.notes,
            "loading": self.loading,
        }


def _metric_dict(m: Measurements) -> dict[str, Any]:
    extra = {"se": m.metric_se, "constant_loss": m.constant_loss, "perplexity": m.perplexity}
    return {"name": m.metric, "value": m.accuracy, **{k: v for k, v in extra.items() if v is not None}}


def _layer_dict(layer: LayerStats) -> dict[str, Any]:
    """Pairs (σ's range, the medians' intervals, z's) as JSON writes them: lists."""
    interval = layer.z_interval
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(layer).items()}
    return {**fields, "z_interval": None if interval is None else list(interval)}


def json_safe(value: Any) -> Any:
    """``value`` with everything JSON cannot hold (tensors, NaN, ...) left out."""
    if isinstance(value, dict):
        kept = {str(k): json_safe(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not _DROP}
    if isinstance(value, list | tuple):
        return [v for v in (json_safe(v) for v in value) if v is not _DROP]
    if isinstance(value, float) and not math.isfinite(value):
        return _DROP
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return _DROP


_DROP = object()
