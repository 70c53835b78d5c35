"""Cell texts of the trajectory table, shared by the terminal and Markdown renderers."""

from __future__ import annotations

from ..report.trajectories import CHECKS, Trajectory, TrajectoryRow
from .formatting import metric_with_error, num, verdict_text, with_error


def trajectory_rows(traj: Trajectory, errors: bool = True, deep_errors: bool = True) -> list[list[str]]:
    """The cells of each checkpoint's row; the accuracy and Γ ± their standard errors where the reports
    give them and ``errors`` asks for them, deep Γ ± its own where ``deep_errors`` does too (a narrow
    terminal leaves them out)."""
    return [
        [
            r.name,
            "—" if r.epoch is None else f"{r.epoch:g}",
            metric_with_error(r.accuracy, r.accuracy_se if errors else None),
            num(r.max_growth),
            num(r.min_g_norm),
            with_error(r.headline, r.headline_se if errors else None),
            with_error(r.deep_gamma, r.deep_gamma_se if errors and deep_errors else None),
            *(r.statuses.get(name, "—") for name in CHECKS),
            verdict_text(r.verdict),
        ]
        for r in traj.rows
    ]


TRAJECTORY_COLUMNS = (
    "checkpoint",
    "epoch",
    "accuracy",
    "max growth",
    "min ‖g‖",
    "Γ",
    "deep Γ",
    *CHECKS,
    "verdict",
)


def first_failure_lines(traj: Trajectory) -> list[str]:
    """When each check first fails, then the early warnings of a falling ‖g‖, then where the
    judgement of reports read from files came from, and thresholds looser than the protocol's."""
    return (
        [_first_failure(traj, name, row) for name, row in traj.first_failures().items()]
        + [f"early warning: {line}" for line in traj.early_warnings()]
        + traj.provenance()
        + traj.looser()
    )


def _first_failure(traj: Trajectory, name: str, row: TrajectoryRow | None) -> str:
    if row is not None:
        return f"{name}: first fails at {row.label} ({row.name})"
    return f"{name}: never assessed" if traj.never_assessed(name) else f"{name}: never fails"
