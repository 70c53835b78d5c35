"""``--sarif``: SARIF 2.1.0, the format GitHub code scanning and other static-analysis
dashboards read. One rule per check; one result per failing (``error``) or not-assessed
(``warning``) check of each audited checkpoint, or per regression for ``compare``, located
at the checkpoint; and a ``thresholds`` warning where a gate was set looser than the protocol's."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from ..config import looser_notes
from .base import FileFormat, Result
from .check_results import CHECK_DESCRIPTIONS, failing_checks, regressions_by_check, reports_of

SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
LEVEL = {"fail": "error", "not_assessed": "warning"}
THRESHOLDS_RULE = (
    "The gates are the protocol's",
    "A warning where a thresholds file set a gate looser than the protocol's defaults (a higher growth limit, a "
    "lower floor, margin, reach or null_z): a verdict under them is not the protocol's.",
)


def artifact_uri(checkpoint: str) -> str:
    """A URI reference for a checkpoint path: ``file://`` when absolute, else relative (the
    form code scanning resolves against the repository root)."""
    path = Path(checkpoint)
    if path.is_absolute():
        return path.as_uri()
    return quote(str(PurePosixPath(*path.parts)))


def _result(rule: str, level: str, text: str, checkpoint: str) -> dict[str, Any]:
    location = {"physicalLocation": {"artifactLocation": {"uri": artifact_uri(checkpoint)}}}
    return {"ruleId": rule, "level": level, "message": {"text": text}, "locations": [location]}


def _results(result: Result) -> list[dict[str, Any]]:
    if result.kind == "comparison":
        b = result.shown["b"]["checkpoint"]
        found = [_result(check, "error", text, b) for check, text in regressions_by_check(result.shown).items()]
    else:
        found = [
            _result(check["name"], LEVEL[check["status"]], text, report["checkpoint"])
            for report in reports_of(result)
            for check, text in failing_checks(report)
        ]
    return found + _looser_results(result)


def _looser_results(result: Result) -> list[dict[str, Any]]:
    """One warning per distinct note of thresholds looser than the protocol's, at the first checkpoint
    judged by them."""
    first: dict[str, str] = {}
    for report in reports_of(result):
        for note in looser_notes(report.get("notes", [])):
            first.setdefault(note, report["checkpoint"])
    return [_result("thresholds", "warning", note, where) for note, where in first.items()]


def sarif(result: Result) -> dict[str, Any]:
    from .. import __version__

    rules = [
        {"id": name, "name": name, "shortDescription": {"text": short}, "fullDescription": {"text": full}}
        for name, (short, full) in {**CHECK_DESCRIPTIONS, "thresholds": THRESHOLDS_RULE}.items()
    ]
    driver = {"name": "fa-audit", "version": __version__, "rules": rules}
    return {"$schema": SCHEMA, "version": "2.1.0", "runs": [{"tool": {"driver": driver}, "results": _results(result)}]}


SARIF = FileFormat(
    "sarif", "the SARIF 2.1.0 log", to_stdout=True, write=lambda r: (json.dumps(sarif(r), indent=2) + "\n").encode()
)
