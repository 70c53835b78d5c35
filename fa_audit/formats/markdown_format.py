"""``--markdown``: a section a paper or a pull request can paste."""

from __future__ import annotations

from ..render.markdown import comparison_markdown, report_markdown, trajectory_markdown
from .base import FileFormat, Result, by_kind


def markdown(result: Result) -> str:
    return by_kind(result, report_markdown, trajectory_markdown, comparison_markdown)


MARKDOWN = FileFormat("markdown", "the Markdown report", to_stdout=True, write=lambda r: markdown(r).encode())
