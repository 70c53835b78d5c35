"""The JSON report; its schema is :mod:`fa_audit.report.schema`."""

from __future__ import annotations

import json
from typing import Any

from . import AuditReport
from .key import signed


def dumps(document: AuditReport | Any) -> str:
    """A report, or any JSON document of reports (lists, comparisons); each report carries
    its HMAC when ``FA_AUDIT_REPORT_KEY`` is set."""
    data = signed(document.to_dict() if isinstance(document, AuditReport) else document)
    # allow_nan=False: a NaN can never reach a report disguised as a number.
    return json.dumps(data, indent=2, allow_nan=False) + "\n"
