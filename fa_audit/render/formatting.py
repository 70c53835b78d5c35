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


def signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"
