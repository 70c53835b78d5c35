"""``--format github``: workflow annotations on standard output, and the Markdown report
appended to the job's step summary."""

from __future__ import annotations

from ..render.github import check_annotations, looser_annotations, regression_annotations
from .base import Result


def workflow_commands(result: Result) -> list[str]:
    if result.kind == "report":
        return check_annotations(result.shown) + looser_annotations([result.shown])
    if result.kind == "trajectory":
        return [line for report in result.shown for line in check_annotations(report)] + looser_annotations(
            result.shown
        )
    return regression_annotations(result.shown) + looser_annotations([result.shown["a"], result.shown["b"]])
