"""Whether a layer's cosine is above its null band, decided so that the answer does not
depend on the random seed (docs/measurements.md, "Borderline layers").

z = (Γ − μ) / σ, with the null's μ and σ estimated from K draws of random feedback, is
itself an estimate: near ``null_z`` the draws' own spread would decide. Under a Gaussian
null, the delta method gives z's standard error sqrt(1/K + z²/(2(K − 1))) (the mean of K
draws has variance σ²/K, their standard deviation about σ²/(2(K − 1))). A layer is
*reached* when the 99.9 % interval z ± 3.29·se lies at or above ``null_z``, *missing* when
it lies below, *borderline* when it straddles it; the audit adds draws to a layer while it
straddles, up to a bound, so only a layer really at the threshold stays borderline. A null in
closed form has no draws: its interval is the range its bound leaves σ.
"""

from __future__ import annotations

import math
from enum import StrEnum

CRITICAL = 3.2905
"""The two-sided 99.9 % point of the standard normal: each settled decision is wrong with
probability below 0.1 % per look (below 0.5 % over the five looks 20 → 320 draws)."""


class Reach(StrEnum):
    REACHED = "reached"
    MISSING = "missing"
    BORDERLINE = "borderline"


def z_interval(z: float, draws: int, spread: float = 1.0) -> tuple[float, float]:
    """The 99.9 % interval of a z estimated from ``draws`` null draws. ``spread`` is σ_n / σ_N ≥ 1
    where the null's σ was measured on n of Γ's N samples and carried to N
    (:meth:`~.accumulate.CosineSums.carried_std`). μ's error is σ_n / √K, and σ²_N moves with the
    draws' variance σ²_n, so in z's units both terms widen, by spread² and spread⁴. Since σ_N ≤ σ_n,
    a positive z is also at least z / spread, the z on the n samples alone, whose own interval is
    narrower: the low end is the higher of the two (where the rows' covariance is poorly measured,
    a z of hundreds is not made borderline by the carrying)."""
    f = spread * spread
    se = math.sqrt(f / draws + f * f * z * z / (2.0 * (draws - 1)))
    low, high = z - CRITICAL * se, z + CRITICAL * se
    if spread > 1.0 and z > 0:
        on_sample = z / spread
        low = max(low, on_sample - CRITICAL * math.sqrt(1.0 / draws + on_sample * on_sample / (2.0 * (draws - 1))))
    return low, high


def carried_spread(std: float | None, on_sample: float | None) -> float:
    """σ_n / σ_N of a null carried from its n samples to Γ's N (1 where it was not)."""
    return max(on_sample / std, 1.0) if on_sample is not None and std else 1.0


def drawn_interval(z: float, draws: int, std: float | None, on_sample: float | None) -> tuple[float, float]:
    """:func:`z_interval` of a drawn null of spread ``std`` (σ_N), measured as ``on_sample`` (σ_n)."""
    return z_interval(z, draws, carried_spread(std, on_sample))


def closed_interval(excess: float, std_low: float, std_high: float) -> tuple[float, float]:
    """The z a closed-form null gives ``excess`` = Γ − μ for every σ in [std_low, std_high]
    (fa_audit/measure/null_closed.py): a bound, not a confidence interval."""
    ends = [excess / std if std > 0 else math.copysign(math.inf, excess) for std in (std_low, std_high)]
    return min(ends), max(ends)


def reach(z: float, interval: tuple[float, float] | None, null_z: float) -> Reach:
    """Where a layer's z stands against ``null_z`` given its interval; a report that gives none
    (an older one) is judged on the point value, as it was then."""
    low, high = (z, z) if interval is None else interval
    if low >= null_z:
        return Reach.REACHED
    if high < null_z:
        return Reach.MISSING
    return Reach.BORDERLINE
