"""The findings under a report and the degenerate-cosine mark, shared by every renderer
so that a pasted Markdown table carries the same warnings as the terminal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MARK = {"pass": "✓", "fail": "✗", "not_assessed": "?", "note": "·", "refused": "·"}
DEGENERATE = "*"
DEGENERATE_NOTE = "degenerate: reference validity failed, so this cosine does not measure useful credit"
BORDERLINE = "~"
BORDERLINE_NOTE = (
    "borderline: the 99.9 % interval of z straddles null_z even after more null draws, so credit reach counts "
    "the layer neither as reached nor as missing"
)


def borderline_layers(checks: list[dict[str, Any]]) -> set[str]:
    """The layers depth utility found borderline, from a JSON-shaped report's checks."""
    return {name for c in checks if c["name"] == "depth_utility" for name in c["values"].get("layers_borderline", [])}


@dataclass(frozen=True)
class Finding:
    kind: str
    """A check status (``fail``, ``not_assessed``), ``note`` or ``refused``: picks the mark and the style."""
    label: str
    """The check or layer it is about; empty for a report-wide note."""
    text: str

    @property
    def mark(self) -> str:
        return MARK[self.kind]


def findings(report: dict[str, Any]) -> list[Finding]:
    """Every failure, reason for not assessing, note and refusal of a JSON-shaped report."""
    found: list[Finding] = []
    for check in report["checks"]:
        found += [Finding(check["status"], check["name"], m) for m in check.get("messages", [])]
        found += [Finding("note", check["name"], n) for n in check.get("notes", [])]
    found += [
        Finding("refused", layer["name"], f"cosine refused: {layer['refused']}")
        for layer in report["layers"]
        if layer.get("refused")
    ]
    found += [Finding("note", "", n) for n in report.get("notes", [])]
    return found


def is_degenerate(report: dict[str, Any]) -> bool:
    """Cosines are shown but measured against a reference that failed its check."""
    failed = any(c["name"] == "reference_validity" and c["status"] == "fail" for c in report["checks"])
    return failed and any(layer.get("cos") is not None for layer in report["layers"])
