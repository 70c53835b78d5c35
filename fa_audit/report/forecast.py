"""When a log-linear fall reaches a floor, with its uncertainty: the least-squares line through
(epoch, log10 value) and Fieller's interval for the epoch at which the line meets the floor.

The interval is the set of epochs x whose line value a + b·x is within t·s·√(1/n + (x − x̄)²/Sxx)
of the floor (t the two-sided Student-t quantile on n − 2 degrees of freedom, s the residuals'
standard deviation): bounded only where the slope itself is known to be nonzero at that
confidence; three epochs (one degree of freedom, t = 12.7) rarely are."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..measure.student_t import student_t


@dataclass(frozen=True)
class Line:
    slope: float
    intercept: float
    r2: float
    residual_sd: float
    """s, the residuals' standard deviation (n − 2 in its denominator; 0 for two points)."""
    points: int
    mean_x: float
    sxx: float

    def crossing(self, y: float) -> float:
        """The x at which the line reaches ``y``."""
        return (y - self.intercept) / self.slope

    def crossing_interval(self, y: float, confidence: float) -> tuple[float, float] | None:
        """Fieller's ``confidence`` interval for :meth:`crossing`; None where it is unbounded (the
        slope is not known to be nonzero) or under three points."""
        if self.points < 3:
            return None
        t = student_t(confidence, self.points - 2)
        spread = (t * self.residual_sd) ** 2
        d = y - (self.intercept + self.slope * self.mean_x)  # the floor from the line at x̄
        a = self.slope**2 - spread / self.sxx  # (b u − d)² ≤ spread (1/n + u²/Sxx), u = x − x̄
        if a <= 0:
            return None
        half = math.sqrt(max((self.slope * d) ** 2 - a * (d * d - spread / self.points), 0.0))
        return self.mean_x + (self.slope * d - half) / a, self.mean_x + (self.slope * d + half) / a


def fit_line(points: list[tuple[float, float]]) -> Line | None:
    """Least-squares line of y on x; None when x does not vary."""
    n = len(points)
    mx, my = math.fsum(x for x, _ in points) / n, math.fsum(y for _, y in points) / n
    sxx = math.fsum((x - mx) ** 2 for x, _ in points)
    syy = math.fsum((y - my) ** 2 for _, y in points)
    if sxx == 0:
        return None
    slope = math.fsum((x - mx) * (y - my) for x, y in points) / sxx
    r2 = 1.0 if syy == 0 else slope**2 * sxx / syy
    residuals = math.fsum((y - my - slope * (x - mx)) ** 2 for x, y in points)
    sd = math.sqrt(residuals / (n - 2)) if n > 2 else 0.0
    return Line(slope, my - slope * mx, r2, sd, n, mx, sxx)
