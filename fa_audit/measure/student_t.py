"""Student's t quantiles, exact for whole degrees of freedom: the two-sided probability is a finite
series (Abramowitz & Stegun 26.7.3–4), inverted by bisection. For the intervals of numbers estimated
from few independent parts (dir_stab's eight jackknife groups, the effective ranks' four, a trend
over a few epochs)."""

from __future__ import annotations

import functools
import math


@functools.lru_cache(maxsize=64)  # a few (confidence, dof) pairs an audit, asked for at every layer
def student_t(confidence: float, dof: int) -> float:
    """The t with P(|T| ≤ t) = ``confidence`` on ``dof`` degrees of freedom, by bisection on the
    exact two-sided probability (Abramowitz & Stegun 26.7.3–4, a finite series for whole dof)."""
    low, high = 0.0, 1.0
    while _two_sided(high, dof) < confidence:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if _two_sided(middle, dof) < confidence else (low, middle)
        if high - low <= 1e-12 * high:
            break
    return (low + high) / 2


def _two_sided(t: float, dof: int) -> float:
    """P(|T| ≤ t) for Student's t on ``dof`` degrees of freedom."""
    theta = math.atan(t / math.sqrt(dof))
    c2 = math.cos(theta) ** 2
    if dof % 2 == 0:
        term, total = 1.0, 1.0
        for k in range(2, dof, 2):  # Π (k − 1)/k · cos²θ, k = 2, 4, …, dof − 2
            term *= (k - 1) / k * c2
            total += term
        return math.sin(theta) * total
    if dof == 1:
        return 2 * theta / math.pi
    term, total = 1.0, 1.0
    for k in range(3, dof - 1, 2):  # Π (k − 1)/k · cos²θ, k = 3, 5, …, dof − 2
        term *= (k - 1) / k * c2
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
