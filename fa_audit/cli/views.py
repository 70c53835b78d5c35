"""The four views (JSON, Markdown, annotations, plot, terminal) of each kind of result."""

from __future__ import annotations

from typing import Any

from ..compare import Comparison
from ..escape import printable_doc
from ..render.compare_table import render_comparison
from ..render.github import check_annotations, regression_annotations
from ..render.markdown import comparison_markdown, report_markdown, trajectory_markdown
from ..render.plot import plot_profiles, plot_trajectory
from ..render.table import render
from ..render.trajectory_table import render_trajectory
from ..report import AuditReport
from ..trajectory import Trajectory, trajectory
from .outputs import Views


def report_views(report: AuditReport, wide: bool = False) -> Views:
    doc = report.to_dict()
    shown = printable_doc(doc)
    return Views(
        document=doc,
        markdown=lambda: report_markdown(shown),
        annotations=lambda: check_annotations(shown),
        plot=lambda: plot_profiles([doc]),
        render=lambda console: render(report, console, wide),
    )


def trajectory_views(reports: list[dict[str, Any]]) -> tuple[Views, Trajectory]:
    shown = printable_doc(reports)
    traj = trajectory(shown)
    views = Views(
        document=reports,
        markdown=lambda: trajectory_markdown(traj, shown),
        annotations=lambda: [line for r in shown for line in check_annotations(r)],
        plot=lambda: plot_trajectory(traj, reports),
        render=lambda console: render_trajectory(traj, console),
    )
    return views, traj


def comparison_views(comparison: Comparison) -> Views:
    doc = comparison.to_dict()
    shown = printable_doc(doc)
    return Views(
        document=doc,
        markdown=lambda: comparison_markdown(shown),
        annotations=lambda: regression_annotations(shown),
        plot=lambda: plot_profiles([doc["a"], doc["b"]]),
        render=lambda console: render_comparison(comparison, console),
    )
