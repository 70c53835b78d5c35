"""The early warning's forecast with its uncertainty: Student's t quantiles, and Fieller's interval
for the epoch at which a log-linear fall reaches the floor."""

from __future__ import annotations

import math
import random

import pytest

from fa_audit.measure.student_t import student_t
from fa_audit.report.forecast import fit_line


@pytest.mark.parametrize(
    ("dof", "table"),  # two-sided 95 % points of Student's t, as printed in any table
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (10, 2.228), (30, 2.042), (120, 1.980)],
)
def test_student_t_is_the_tables(dof: int, table: float) -> None:
    assert student_t(0.95, dof) == pytest.approx(table, abs=6e-4)


def test_many_degrees_of_freedom_give_the_normal_quantile() -> None:
    assert student_t(0.95, 2000) == pytest.approx(1.95996, abs=2e-3)


def test_the_interval_holds_the_true_crossing_as_often_as_it_says() -> None:
    """2,000 simulated runs of log10 ‖g‖ = −5 − 0.5·epoch + noise (σ 0.05) over epochs 1–6: the
    true crossing of −8 (epoch 6) lies in the interval in 95 % of them, within the simulation's
    error; the interval is bounded in every run (the slope is far from 0 at this noise)."""
    rng = random.Random(0)
    hits, runs = 0, 2000
    for _ in range(runs):
        line = fit_line([(e, -5 - 0.5 * e + rng.gauss(0, 0.05)) for e in range(1, 7)])
        assert line is not None
        interval = line.crossing_interval(-8.0, 0.95)
        assert interval is not None and interval[0] <= line.crossing(-8.0) <= interval[1]
        hits += interval[0] <= 6.0 <= interval[1]
    error = 3 * math.sqrt(0.05 * 0.95 / runs)
    assert 0.95 - error <= hits / runs <= 0.95 + error


def test_three_noisy_epochs_leave_the_crossing_unbounded() -> None:
    line = fit_line([(1, -5.586), (2, -6.301), (3, -6.649)])  # the bundled snapshots' blocks.1
    assert line is not None and line.crossing(-7.0) == pytest.approx(3.545, abs=1e-3)
    assert line.crossing_interval(-7.0, 0.95) is None
