"""Each kind of result (one report, a trajectory, a comparison) as the :class:`Result`
every output format reads."""

from __future__ import annotations

from typing import Any

from ..escape import printable_doc
from ..formats import Result
from ..render.compare_table import render_comparison
from ..render.table import render
from ..render.trajectory_table import render_trajectory
from ..report import AuditReport
from ..report.comparison import Comparison
from ..report.trajectories import Trajectory, trajectory


def report_result(report: AuditReport, wide: bool = False) -> Result:
    doc = report.to_dict()
    return Result("report", doc, printable_doc(doc), lambda console: render(report, console, wide))


def trajectory_result(reports: list[dict[str, Any]]) -> tuple[Result, Trajectory]:
    shown = printable_doc(reports)
    traj = trajectory(shown)
    return Result("trajectory", reports, shown, lambda console: render_trajectory(traj, console), traj), traj


def comparison_result(comparison: Comparison) -> Result:
    doc = comparison.to_dict()
    return Result("comparison", doc, printable_doc(doc), lambda console: render_comparison(comparison, console))
