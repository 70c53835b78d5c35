"""``--latex``: booktabs tables with the verdict in their captions, for a paper's appendix."""

from __future__ import annotations

from ..render.latex import comparison_latex, report_latex, trajectory_latex
from .base import FileFormat, Result, by_kind


def latex(result: Result) -> str:
    return by_kind(result, report_latex, trajectory_latex, comparison_latex)


LATEX = FileFormat("latex", "LaTeX booktabs tables", to_stdout=True, write=lambda r: latex(r).encode())
