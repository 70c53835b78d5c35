"""The JSON report (SPEC §6); the schema ships beside it."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from ..report import AuditReport


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(files("fa_audit.schema").joinpath("report.schema.json").read_text("utf-8"))
    return loaded


def dumps(document: AuditReport | Any) -> str:
    """A report, or any JSON document of reports (lists, comparisons)."""
    data = document.to_dict() if isinstance(document, AuditReport) else document
    # allow_nan=False: a NaN can never reach a report disguised as a number.
    return json.dumps(data, indent=2, allow_nan=False) + "\n"
