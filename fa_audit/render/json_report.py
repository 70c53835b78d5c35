"""The JSON report (SPEC §6), written atomically; the schema ships beside it."""

from __future__ import annotations

import json
import os
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..report import AuditReport


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(files("fa_audit.schema").joinpath("report.schema.json").read_text("utf-8"))
    return loaded


def dumps(report: AuditReport) -> str:
    # allow_nan=False: a NaN can never reach a report disguised as a number.
    return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Temporary file in the same folder, then rename: never half a report."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
