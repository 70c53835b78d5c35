"""Cell texts of the trajectory table, shared by the terminal and Markdown renderers."""

from __future__ import annotations

from ..trajectory import CHECKS, Trajectory
from .formatting import num, signed, verdict_text


def trajectory_rows(traj: Trajectory) -> list[list[str]]:
    return [
        [
            r.name,
            "—" if r.epoch is None else f"{r.epoch:g}",
            f"{r.accuracy:.4f}",
            num(r.max_growth),
            num(r.min_g_norm),
            signed(r.headline),
            signed(r.deep_gamma),
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
    """When each check first fails, then the early warnings of a falling ‖g‖."""
    return [
        f"{name}: never fails" if row is None else f"{name}: first fails at {row.label} ({row.name})"
        for name, row in traj.first_failures().items()
    ] + [f"early warning: {line}" for line in traj.early_warnings()]
