"""The terminal trajectory/sweep table: one row per checkpoint, and when each check
first fails."""

from __future__ import annotations

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ..report import Status
from ..report.trajectories import CHECKS, Trajectory
from .rows import TRAJECTORY_COLUMNS, first_failure_lines, trajectory_rows
from .table import STATUS_STYLE

SHORT = {"scale_stability": "scale", "reference_validity": "reference", "depth_utility": "depth"}
STATUS_TEXT = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.NOT_ASSESSED: "N/A"}


NARROW_LEFT_OUT = ("max growth", "min ‖g‖", "Γ")
LAYOUTS = ((False, True, True), (False, True, False), (False, False, False), (True, False, False))
"""(narrow, errors, deep_errors), widest first: a terminal too narrow for the whole table loses deep
Γ's ±, then every ±, then max growth, min ‖g‖ and Γ, keeping the checks and verdicts whole."""


class TrajectoryTable:
    """The trajectory table laid out for the width it is printed in (as the per-layer table is)."""

    def __init__(self, traj: Trajectory) -> None:
        self.traj = traj

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        tables = [trajectory_table(self.traj, *layout) for layout in LAYOUTS]
        unbounded = options.update_width(1 << 16)  # Measurement.get caps a width at the one it is given
        fits = (t for t in tables if Measurement.get(console, unbounded, t).maximum <= options.max_width)
        yield next(fits, tables[-1])


def trajectory_table(traj: Trajectory, narrow: bool = False, errors: bool = True, deep_errors: bool = True) -> Table:
    """``narrow``: the checks and the verdict only; ``errors``: the accuracy and Γ ± their standard errors,
    ``deep_errors`` deep Γ's ± too."""
    said = "±" if not errors else "deep Γ's ±" if not deep_errors else None
    left_out = [*(NARROW_LEFT_OUT if narrow else ()), *((said,) if said else ())]
    caption = "N/A: not assessed" + (f"; narrow: {', '.join(left_out)} left out" if left_out else "")
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,  # blank in this box: two columns for the ±
        padding=(0, 0, 0, 1),
        title="trajectory",
        title_justify="left",
        header_style="bold",
        caption=caption,
        caption_justify="left",
    )
    shown = [i for i, column in enumerate(TRAJECTORY_COLUMNS) if not (narrow and column in NARROW_LEFT_OUT)]
    for i in shown:
        column = TRAJECTORY_COLUMNS[i]
        table.add_column(SHORT.get(column, column), justify="left" if column == "checkpoint" else "right", no_wrap=True)
    status_columns = range(len(TRAJECTORY_COLUMNS) - len(CHECKS) - 1, len(TRAJECTORY_COLUMNS) - 1)
    for cells in trajectory_rows(traj, errors=errors, deep_errors=deep_errors):
        styled = [
            Text(STATUS_TEXT[Status(c)], style=STATUS_STYLE[Status(c)])
            if i in status_columns and c in set(Status)
            else Text(c)
            for i, c in enumerate(cells)
        ]
        table.add_row(*(styled[i] for i in shown))
    return table


def render_trajectory(traj: Trajectory, console: Console) -> None:
    lines = Text("\n".join(first_failure_lines(traj)) + "\n")
    lines.append(f"exit code {int(traj.exit_code)} (the worst over {len(traj.rows)} checkpoints)", style="bold")
    console.print(Group(TrajectoryTable(traj), lines))
