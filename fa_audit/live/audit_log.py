"""A run's audits as JSON lines: ``AuditLog(path).append(report)`` after each audit, from a
plain training loop or the Lightning callback; ``fa-audit run LOG.jsonl`` (or ``summarize``)
reads the log back as a trajectory, with the epoch at which each check first fails."""

from __future__ import annotations

import json
from pathlib import Path

from ..report import AuditReport
from ..report.key import signed


class AuditLog:
    """Appends each report as one line of canonical JSON (the ``--json`` document) to ``path``.
    Each line is written whole and flushed, so a run that dies leaves every earlier audit."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, report: AuditReport) -> None:
        line = json.dumps(signed(report.to_dict()), sort_keys=True, allow_nan=False, separators=(",", ":"))
        with self.path.open("a", encoding="utf-8") as log:
            log.write(line + "\n")
            log.flush()
