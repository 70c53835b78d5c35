"""Number formatting shared by the renderers."""

from __future__ import annotations

import math

from ..escape import printable
from ..report.comparison import Overall


def metric_text(
    metric: str, head: str, value: float, perplexity: float | None = None, error: float | None = None
) -> str:
    """The task metric as the report names it, ± its standard error where known: 'accuracy 0.5466 ±
    0.0078', 'mse loss 0.07573'; a language model's perplexity beside it."""
    named = "accuracy" if metric == "accuracy" else f"{printable(head)} loss"
    beside = "" if perplexity is None else f", perplexity {perplexity:.4g}"
    plus_minus = "" if error is None else f" ± {metric_value(metric, error)}"
    return f"{named} {metric_value(metric, value)}{plus_minus}{beside}"


def metric_value(metric: str, value: float) -> str:
    """An accuracy to 4 decimals, a loss to 4 significant digits (it has no scale of its own)."""
    return f"{value:.4f}" if metric == "accuracy" else f"{value:.4g}"


def num(value: float | None, digits: int = 3) -> str:
    """Compact: fixed point in the readable range, scientific outside it; '—' for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value != 0 and not 1e-3 <= abs(value) < 1e5:
        return f"{value:.{max(digits - 1, 1)}e}"
    if abs(value) < 1:
        return f"{value:.{digits}f}"
    decimals = max(digits - len(str(int(abs(value)))), 0)
    return f"{value:.{decimals}f}"


def verdict_text(verdict: str) -> str:
    """WALK_BACK -> WALK BACK."""
    return verdict.replace("_", " ")


def signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


def with_error(value: float | None, error: float | None, spaced: bool = False) -> str:
    """``value`` signed to 3 decimals, ± its standard error where known (one significant digit
    below 0.0005, where 3 decimals would print a zero)."""
    return signed(value) if value is None or error is None else f"{value:+.3f}{_plus_minus(error, spaced)}"


def stability(value: float | None, error: float | None, spaced: bool = False) -> str:
    """dir_stab ± its standard error (:func:`with_error`'s digits, unsigned as :func:`num` prints it)."""
    return num(value) if value is None or error is None else f"{num(value)}{_plus_minus(error, spaced)}"


def _plus_minus(error: float, spaced: bool) -> str:
    pm = " ± " if spaced else "±"
    return f"{pm}{error:.3f}" if error >= 5e-4 else f"{pm}{error:.0e}"


def metric_with_error(value: float, error: float | None, sign: bool = False) -> str:
    """A task metric to four decimals (a difference with its ``sign``), ± its standard error where known."""
    return (f"{value:+.4f}" if sign else f"{value:.4f}") + ("" if error is None else f"±{error:.4f}")


def _number(values: dict[str, object], key: str) -> float | None:
    value = values.get(key)
    return float(value) if isinstance(value, int | float) else None


def check_value(name: str, values: dict[str, object]) -> str:
    """The measured value of a check in a few words."""
    if name == "scale_stability":
        return f"max growth {num(_number(values, 'max_growth'))}× at {values.get('layer', '—')}" if values else "—"
    if name == "reference_validity":
        relative = _number(values, "min_relative_grad_norm")
        per_error = "" if relative is None else f"min ‖g‖/‖e‖ {num(relative)} at {values.get('relative_layer')}; "
        return (
            f"{per_error}min ‖g‖ {num(_number(values, 'min_grad_norm'))} at {values.get('layer')}; "
            f"fp64 agreement ≥ {num(_number(values, 'min_fp64_agreement'), 4)}"
        )
    relative = values.get("margin_unit") == "%"  # the metric is the loss: its relative reduction
    margin = _number(values, "margin_pct" if relative else "margin_pp")
    reach = _number(values, "credit_reach")
    unit = "%" if relative else "pp"
    what = "loss reduction" if relative else "margin"
    margin_text = f"{what} not assessed" if margin is None else f"{what} {margin:+.2f} {unit}"
    span = values.get("margin_interval_pct" if relative else "margin_interval_pp")
    if margin is not None and isinstance(span, list) and len(span) == 2 and span[0] != span[1]:
        margin_text += f" ({span[0]:+.2f} … {span[1]:+.2f})"
    reach_text = "reach not assessed" if reach is None else f"credit reach {reach:.2f}"
    borderline = values.get("layers_borderline")
    if isinstance(borderline, list) and borderline:
        reach_text += f" ({len(borderline)} borderline)"
    return f"{margin_text}; {reach_text}"


def check_thresholds(name: str, thresholds: dict[str, object], values: dict[str, object] | None = None) -> str:
    """The thresholds of a check in a few words ('?' for any a merged report lacks); ``values``
    say whether depth utility's margin was a loss reduction."""
    if name == "depth_utility" and (values or {}).get("margin_unit") == "%":
        return loss_thresholds(thresholds)

    def t(key: str) -> object:
        return thresholds.get(key, "?")

    if name == "scale_stability":
        return f"growth ≤ {t('max_block_growth')}×"
    if name == "reference_validity":
        if "min_relative_grad_norm" in thresholds:
            return (
                f"‖g‖/‖e‖ ≥ {t('min_relative_grad_norm')} (‖g‖ ≥ {t('min_grad_norm')} shown); "
                f"fp64 ≥ {t('min_fp64_agreement')}"
            )
        return f"‖g‖ ≥ {t('min_grad_norm')}; fp64 ≥ {t('min_fp64_agreement')}"
    return f"margin ≥ {t('min_margin_pp')} pp; reach ≥ {t('min_credit_reach')} (z ≥ {t('null_z')})"


def loss_thresholds(thresholds: dict[str, object]) -> str:
    """Depth utility's thresholds where the metric is the loss."""
    return (
        f"loss reduction ≥ {thresholds.get('min_loss_reduction_pct', '?')} %; "
        f"reach ≥ {thresholds.get('min_credit_reach', '?')} (z ≥ {thresholds.get('null_z', '?')})"
    )


OVERALL_COLUMNS = ("quantity", "A", "B", "Δ")


def overall_cells(row: Overall) -> list[str]:
    """A network-wide row of ``compare``: Γ as every cosine, a metric to four decimals (as the trajectory)."""

    def cell(value: float | None, se: float | None, signed: bool = False) -> str:
        return with_error(value, se) if value is None or row.cosine else metric_with_error(value, se, signed)

    return [
        printable(row.label) + " ± se",
        cell(row.a, row.a_se),
        cell(row.b, row.b_se),
        cell(row.delta, row.delta_se, signed=True),
    ]
