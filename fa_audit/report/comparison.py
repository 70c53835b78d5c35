"""Two audits side by side: per-layer deltas, per-check statuses, and the regressions
that gate CI (a check that passes for A and fails for B)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..escape import printable
from ..exit_codes import ExitCode
from . import AuditReport, LayerStats, Status

COMPARED = ("h_norm", "growth", "g_norm", "cos", "z", "dir_stab")
"""The per-layer quantities shown as A, B and Δ."""
WITH_ERROR = {"cos": "cos_se", "dir_stab": "dir_stab_se"}
"""Those shown ± their standard error, by the field that holds it."""


@dataclass(frozen=True)
class LayerPair:
    name: str
    a: LayerStats | None
    b: LayerStats | None
    """None on the side that has no layer at this module."""

    def delta(self, quantity: str) -> float | None:
        if self.a is None or self.b is None:
            return None
        va, vb = getattr(self.a, quantity), getattr(self.b, quantity)
        return None if va is None or vb is None else vb - va

    def delta_se(self, quantity: str) -> float | None:
        """The standard error of Δ ``quantity`` (one of :data:`WITH_ERROR`), as if A's and B's eval sets
        were independent: on one eval set the two errors are correlated and a paired error is smaller,
        so this one errs wide."""
        if self.a is None or self.b is None:
            return None
        a, b = getattr(self.a, WITH_ERROR[quantity]), getattr(self.b, WITH_ERROR[quantity])
        return None if a is None or b is None else math.hypot(a, b)


@dataclass(frozen=True)
class Overall:
    """One network-wide number of A and of B, each with its standard error over the eval samples."""

    label: str
    a: float | None
    a_se: float | None
    b: float | None
    b_se: float | None
    cosine: bool = True
    """A Γ (shown as every cosine is), else the task metric."""

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def delta_se(self) -> float | None:
        """As :meth:`LayerPair.delta_se`: as if the eval sets were independent, so it errs wide."""
        return None if self.a_se is None or self.b_se is None else math.hypot(self.a_se, self.b_se)


def overall(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Overall]:
    """The task metric, the aggregate Γ and deep Γ (h1..hL) of A and B, from the reports as JSON
    gives them (the terminal's table and the Markdown's alike)."""
    ma, mb, aa, ab = a["metric"], b["metric"], a["aggregate"], b["aggregate"]
    return [
        Overall(ma["name"] if ma["name"] == mb["name"] else "metric", ma["value"], ma.get("se"), mb["value"],
                mb.get("se"), cosine=False),
        Overall("aggregate Γ", aa["headline"], aa.get("headline_se"), ab["headline"], ab.get("headline_se")),
        Overall("deep Γ (h1..hL)", aa.get("deep"), aa.get("deep_se"), ab.get("deep"), ab.get("deep_se")),
    ]  # fmt: skip


@dataclass(frozen=True)
class Comparison:
    a: AuditReport
    b: AuditReport
    layers: list[LayerPair]
    regressions: list[str]
    """Checks that pass for A and fail for B, with B's reasons."""

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.WALK_BACK if self.regressions else ExitCode.TRUST

    def overall(self) -> list[Overall]:
        return overall(self.a.to_dict(), self.b.to_dict())

    def check_pairs(self) -> list[tuple[str, Status | None, Status | None]]:
        names = [c.name for c in self.a.checks] + [c.name for c in self.b.checks if c.name not in _names(self.a)]
        return [(n, _status(self.a, n), _status(self.b, n)) for n in names]

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "regressions": self.regressions,
            "exit_code": int(self.exit_code),
        }


def compare_reports(a: AuditReport, b: AuditReport) -> Comparison:
    """A and B layer by layer, paired by module (a deeper B's extra blocks shown one-sided);
    refused when their architectures differ or they share no hidden state, where a row would
    put one network's layer beside another's."""
    _check_comparable(a, b)
    a_layers = {layer.module: layer for layer in a.measurements.layers}
    b_layers = {layer.module: layer for layer in b.measurements.layers}
    order = list(a_layers) + [module for module in b_layers if module not in a_layers]
    pairs = [LayerPair(_row_name(a_layers.get(m), b_layers.get(m)), a_layers.get(m), b_layers.get(m)) for m in order]
    regressions = [
        f"{check.name}: passes for A, fails for B ({'; '.join(check.messages)})"
        for check in b.checks
        if check.status is Status.FAIL and _status(a, check.name) is Status.PASS
    ]
    return Comparison(a, b, pairs, regressions)


def _row_name(a: LayerStats | None, b: LayerStats | None) -> str:
    """A's name for the state (B's where A has none; both where they differ)."""
    names = list(dict.fromkeys(layer.name for layer in (a, b) if layer is not None))
    return "/".join(names)


def _check_comparable(a: AuditReport, b: AuditReport) -> None:
    shared = {la.module for la in a.measurements.layers} & {la.module for la in b.measurements.layers}
    if a.arch != b.arch or not shared:
        raise different_networks(_states(a), _states(b))


def different_networks(a: str, b: str, also: str = "") -> InputError:
    """The refusal of a comparison of A and B (each said as ``a``, ``b``), with ``also`` said after it."""
    return InputError(
        f"A ({a}) and B ({b}) are different networks, so no layer of one can be set beside a layer of the other{also}: "
        "compare two checkpoints of one architecture, or audit each with fa-audit run"
    )


def _states(report: AuditReport) -> str:
    modules = [la.module for la in report.measurements.layers]
    shown = ", ".join(printable(m) for m in modules[:4]) + (f" and {len(modules) - 4} more" if len(modules) > 4 else "")
    return f"{printable(report.checkpoint)}: {printable(report.arch)}, hidden states {shown or 'none'}"


def _names(report: AuditReport) -> set[str]:
    return {c.name for c in report.checks}


def _status(report: AuditReport, name: str) -> Status | None:
    return next((c.status for c in report.checks if c.name == name), None)
