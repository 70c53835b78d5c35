"""``--format github``: workflow annotations on standard output, and the Markdown report
appended to the job's step summary."""

from __future__ import annotations

from ..render.github import check_annotations, looser_annotations, regression_annotations
from .base import Result
from .check_results import reports_of


def workflow_commands(result: Result) -> list[str]:
    reports = reports_of(result)
    if result.kind == "comparison":
        found = regression_annotations(result.shown)
    else:
        found = [line for report in reports for line in check_annotations(report)]
    return found + looser_annotations(reports)
