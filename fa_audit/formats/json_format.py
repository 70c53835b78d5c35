"""``--json``: the report, list of reports or comparison as JSON (keyed when
``FA_AUDIT_REPORT_KEY`` is set)."""

from __future__ import annotations

from ..report.document import dumps
from .base import FileFormat, Result


def _write(result: Result) -> bytes:
    return dumps(result.document).encode()


JSON = FileFormat("json", "the JSON report", to_stdout=True, write=_write)
