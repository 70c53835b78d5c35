"""The depth-utility margin with its uncertainty over the eval set (docs/measurements.md,
"The margin's interval").

The margin is the audited model's accuracy minus the frozen-blocks baseline's, both on the
same eval samples, so the per-sample differences d_i = hit_model,i − hit_baseline,i are
paired: only the samples where exactly one of the two is right (the discordant ones) carry
information, and the standard error of the mean difference is sd(d)/√n. A baseline accuracy
given as a number has no samples to pair with: its margin gets the unpaired standard error
of two independent accuracies on n samples each. An older report with no standard error is
judged on the point value, as it was then."""

from __future__ import annotations

import math
from dataclasses import replace
from statistics import NormalDist
from typing import Any

from ..report import BaselineInfo


def paired_se_pp(n: int, model_only: int, baseline_only: int) -> float:
    """Standard error, in percentage points, of the mean paired difference over n samples."""
    if n < 2:
        return math.inf
    mean = (model_only - baseline_only) / n
    variance = max((model_only + baseline_only) - n * mean * mean, 0.0) / (n - 1)
    return 100.0 * math.sqrt(variance / n)


def unpaired_se_pp(n: int, p_model: float, p_baseline: float) -> float:
    """Standard error, in percentage points, of the difference of two accuracies on n samples each."""
    if n < 1:
        return math.inf
    return 100.0 * math.sqrt((p_model * (1 - p_model) + p_baseline * (1 - p_baseline)) / n)


def with_error(base: BaselineInfo, accuracy: float, samples: int, hits: Any, metric: str = "accuracy") -> BaselineInfo:
    """``base`` with the margin's standard error: paired when the baseline's per-sample hits
    (per-sample losses, where the ``metric`` is the loss) were measured on the same ``samples``
    as the model's ``hits``."""
    if metric == "loss":
        return _loss_error(base, samples, hits)
    if hits is not None and hits.dtype.is_floating_point:  # per-sample accuracies (a sequence's token accuracy)
        return _score_error(base, samples, hits)
    if base.hits is not None and hits is not None and len(base.hits) == len(hits) == samples:
        model_only = int((hits & ~base.hits).sum())
        baseline_only = int((base.hits & ~hits).sum())
        se = paired_se_pp(samples, model_only, baseline_only)
        return replace(base, margin_se_pp=se, paired=True, discordant=[model_only, baseline_only])
    return replace(base, margin_se_pp=unpaired_se_pp(samples, accuracy, base.accuracy), paired=False)


def _score_error(base: BaselineInfo, samples: int, scores: Any) -> BaselineInfo:
    """The margin's standard error in pp where each sample's score is a fraction (its token
    accuracy): paired over the samples' differences when the baseline's scores are there."""
    if samples < 2:
        return replace(base, margin_se_pp=math.inf, paired=False)
    paired = base.hits is not None and len(base.hits) == len(scores) == samples
    spread = (scores.double() - base.hits.double()) if paired else scores.double()
    se = 100.0 * float(spread.std()) / math.sqrt(samples)
    if not paired:  # the supplied number's own error is unknown: that of the model's mean, twice over
        se *= math.sqrt(2.0)
    return replace(base, margin_se_pp=se, paired=paired)


def _loss_error(base: BaselineInfo, samples: int, losses: Any) -> BaselineInfo:
    """The standard error, in percent of the baseline's mean loss, of the relative loss reduction
    100 (L_base − L_model) / L_base: paired over the samples' loss differences when the baseline's
    per-sample losses are there, else that of the model's mean loss alone (a supplied number)."""
    if base.accuracy <= 0 or losses is None or samples < 2:
        return replace(base, margin_se_pp=None if base.accuracy <= 0 else math.inf, paired=False)
    paired = base.hits is not None and len(base.hits) == len(losses) == samples
    spread = (base.hits.double() - losses.double()) if paired else losses.double()
    se = 100.0 * float(spread.std()) / math.sqrt(samples) / base.accuracy
    return replace(base, margin_se_pp=se, paired=paired)


def interval(margin_pp: float, se_pp: float | None, confidence: float) -> tuple[float, float]:
    """The two-sided ``confidence`` interval of the margin (the point itself without an se)."""
    if se_pp is None:
        return margin_pp, margin_pp
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * se_pp
    return margin_pp - half, margin_pp + half
