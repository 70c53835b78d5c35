"""Number formatting shared by the renderers."""

from __future__ import annotations

import math


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
    margin = _number(values, "margin_pp")
    reach = _number(values, "credit_reach")
    margin_text = "margin not assessed" if margin is None else f"margin {margin:+.2f} pp"
    span = values.get("margin_interval_pp")
    if margin is not None and isinstance(span, list) and len(span) == 2 and span[0] != span[1]:
        margin_text += f" ({span[0]:+.2f} … {span[1]:+.2f})"
    reach_text = "reach not assessed" if reach is None else f"credit reach {reach:.2f}"
    borderline = values.get("layers_borderline")
    if isinstance(borderline, list) and borderline:
        reach_text += f" ({len(borderline)} borderline)"
    return f"{margin_text}; {reach_text}"


def check_thresholds(name: str, thresholds: dict[str, object]) -> str:
    """The thresholds of a check in a few words ('?' for any a merged report lacks)."""

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
