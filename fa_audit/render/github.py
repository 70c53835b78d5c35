"""GitHub Actions output: one ``::error`` per failing check, one ``::warning`` per
check not assessed and one where the thresholds are looser than the protocol's (the gate a
pull request's thresholds file can loosen), escaped as workflow commands require, and a
Markdown summary appended to ``$GITHUB_STEP_SUMMARY`` when that variable is set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import looser_notes

LEVEL = {"fail": "error", "not_assessed": "warning"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def check_annotations(report: dict[str, Any]) -> list[str]:
    name = Path(report["checkpoint"]).name
    lines = []
    for check in report["checks"]:
        level = LEVEL.get(check["status"])
        if level is None:
            continue
        title = escape_property(f"fa-audit {check['name']} ({name})")
        message = "\n".join(check.get("messages") or [check["status"]])
        lines.append(f"::{level} title={title}::{escape_data(message)}")
    return lines


def looser_annotations(reports: list[dict[str, Any]]) -> list[str]:
    """One ``::warning`` per distinct note of thresholds looser than the protocol's, however many
    of the ``reports`` (a trajectory's, a comparison's two) were judged by them."""
    notes = dict.fromkeys(n for r in reports for n in looser_notes(r.get("notes", [])))
    title = escape_property("fa-audit thresholds")
    return [f"::warning title={title}::{escape_data(n)}" for n in notes]


def regression_annotations(comparison: dict[str, Any]) -> list[str]:
    b = Path(comparison["b"]["checkpoint"]).name
    title = escape_property(f"fa-audit regression ({b})")
    return [f"::error title={title}::{escape_data(r)}" for r in comparison["regressions"]]


def append_step_summary(markdown: str) -> Path | None:
    """Append to the job summary, when running under GitHub Actions."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(markdown if markdown.endswith("\n") else markdown + "\n")
    return path
