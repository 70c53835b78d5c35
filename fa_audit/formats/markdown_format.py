"""``--markdown``: a section a paper or a pull request can paste."""

from __future__ import annotations

from ..render.markdown import comparison_markdown, report_markdown, trajectory_markdown
from .base import FileFormat, Result


def markdown(result: Result) -> str:
    if result.kind == "report":
        return report_markdown(result.shown)
    if result.kind == "trajectory":
        assert result.trajectory is not None
        return trajectory_markdown(result.trajectory, result.shown)
    return comparison_markdown(result.shown)


MARKDOWN = FileFormat("markdown", "the Markdown report", to_stdout=True, write=lambda r: markdown(r).encode())
