"""The terminal trajectory/sweep table: one row per checkpoint, and when each check
first fails."""

from __future__ import annotations

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text

from ..report import Status
from ..report.trajectories import CHECKS, Trajectory
from .rows import TRAJECTORY_COLUMNS, first_failure_lines, trajectory_rows
from .table import STATUS_STYLE

SHORT = {"scale_stability": "scale", "reference_validity": "reference", "depth_utility": "depth"}
STATUS_TEXT = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.NOT_ASSESSED: "N/A"}


FULL_WIDTH = 115
"""The trajectory table's width with every column and the accuracy and Γ ± their standard errors..."""
COLUMNS_WIDTH = 104
"""...and without the errors; narrower, it keeps the checks and the verdict."""
NARROW_LEFT_OUT = ("max growth", "min ‖g‖", "Γ")


class TrajectoryTable:
    """The trajectory table laid out for the width it is printed in (as the per-layer table is)."""

    def __init__(self, traj: Trajectory) -> None:
        self.traj = traj

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        yield trajectory_table(self.traj, narrow=width < COLUMNS_WIDTH, errors=width >= FULL_WIDTH)


def trajectory_table(traj: Trajectory, narrow: bool = False, errors: bool = True) -> Table:
    """``narrow``: the checks and the verdict only; ``errors``: the accuracy and Γ ± their standard errors."""
    left_out = [*(NARROW_LEFT_OUT if narrow else ()), *(() if errors else ("±",))]
    caption = "N/A: not assessed" + (f"; narrow: {', '.join(left_out)} left out" if left_out else "")
    table = Table(
        box=box.SIMPLE_HEAD,
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
    for cells in trajectory_rows(traj, errors=errors):
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
