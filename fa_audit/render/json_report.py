"""The JSON report (SPEC §6); its schema is :mod:`fa_audit.report_schema`."""

from __future__ import annotations

import json
from typing import Any

from ..report import AuditReport


def dumps(document: AuditReport | Any) -> str:
    """A report, or any JSON document of reports (lists, comparisons)."""
    data = document.to_dict() if isinstance(document, AuditReport) else document
    # allow_nan=False: a NaN can never reach a report disguised as a number.
    return json.dumps(data, indent=2, allow_nan=False) + "\n"
