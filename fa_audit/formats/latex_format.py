"""``--latex``: booktabs tables with the verdict in their captions, for a paper's appendix."""

from __future__ import annotations

from ..render.latex import comparison_latex, report_latex, trajectory_latex
from .base import FileFormat, Result


def latex(result: Result) -> str:
    if result.kind == "report":
        return report_latex(result.shown)
    if result.kind == "trajectory":
        assert result.trajectory is not None
        return trajectory_latex(result.trajectory, result.shown)
    return comparison_latex(result.shown)


LATEX = FileFormat("latex", "LaTeX booktabs tables", to_stdout=True, write=lambda r: latex(r).encode())
