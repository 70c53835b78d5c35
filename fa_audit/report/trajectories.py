"""Many audits as one table: a training run over its epochs, or a sweep.

Built from JSON-shaped reports (``AuditReport.to_dict()`` or files written by
``--json``), so that reports audited on other machines merge into the same table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import Thresholds, looser_notes
from ..errors import InputError
from ..exit_codes import ExitCode, worst
from ..text_input import REPORT_BYTES, parse_json, read_text
from . import INTERVAL_CONFIDENCE, READABLE_VERSIONS, deep_mean, interval_said
from .forecast import fit_line
from .key import KEY_VARIABLE, verify
from .recheck import recheck, rejudge
from .schema import first_violation, schema

CHECKS = ("scale_stability", "reference_validity", "depth_utility")


@dataclass(frozen=True)
class TrajectoryRow:
    checkpoint: str
    epoch: float | None
    accuracy: float
    max_growth: float | None
    min_g_norm: float
    headline: float | None
    deep_gamma: float | None
    """Mean cos over the deep layers h1..hL; None when any of them has none."""
    statuses: dict[str, str]
    verdict: str
    exit_code: ExitCode
    index: int = 0
    """Position of the report in the list the trajectory was built from."""
    name: str = ""
    """The checkpoint's file name, or its whole path where two reports share a file name."""
    g_norms: tuple[tuple[str, float], ...] = ()
    """(module, the measure reference validity decides on) per hidden state: the median ‖g‖/‖e‖,
    or ‖g‖ itself in a report written before it (schema version 2)."""
    floor: float = 1e-7
    """That measure's floor in the report's config: min_relative_grad_norm, or min_grad_norm."""
    relative: bool = True
    """Whether g_norms are ‖g‖/‖e‖."""
    judged_by: str | None = None
    """The thresholds a report read from a file was judged by (None: audited in this run)."""
    taken: tuple[str, ...] = ()
    """What was taken from that file as written."""
    changed: tuple[str, ...] = ()
    """Statuses those thresholds changed from the ones the file stated."""
    verified: bool = False
    """Whether the file's HMAC was verified (a report key was set)."""
    accuracy_se: float | None = None
    """The metric's standard error over the eval samples (a report written before it has none)."""
    headline_se: float | None = None
    """The headline Γ's standard error over the eval samples (likewise)."""
    deep_gamma_se: float | None = None
    """Deep Γ's standard error over the eval samples (likewise)."""
    looser: str | None = None
    """The note naming the gates its thresholds set looser than the protocol's (None: none)."""

    @property
    def label(self) -> str:
        if self.epoch is None:
            return self.name
        return f"epoch {self.epoch:g}"


@dataclass(frozen=True)
class Trajectory:
    rows: list[TrajectoryRow]
    """Ordered by epoch where every report has one, else by checkpoint name."""

    @property
    def exit_code(self) -> ExitCode:
        return worst([row.exit_code for row in self.rows])

    def never_assessed(self, check: str) -> bool:
        return all(r.statuses.get(check) == "not_assessed" for r in self.rows)

    def provenance(self) -> list[str]:
        """For reports read from files: the thresholds they were judged by, what was taken
        from them as written, and each status those thresholds changed."""
        judged = [r for r in self.rows if r.judged_by is not None]
        if not judged:
            return []
        taken = dict.fromkeys(t.split(" ")[0] if t.startswith("baseline") else t for r in judged for t in r.taken)
        items = ["baseline accuracies" if t == "baseline" else t for t in taken]
        by = ", ".join(dict.fromkeys(r.judged_by or "" for r in judged))
        lines = [f"judged by {by}; taken from the reports as written: {', '.join(items)}"]
        if not all(r.verified for r in judged):
            lines.append(f"not verified: no {KEY_VARIABLE} was set, so anyone could have edited these reports")
        return lines + [f"{r.name}: {change} by these thresholds" for r in judged for change in r.changed]

    def looser(self) -> list[str]:
        """Each distinct note of thresholds looser than the protocol's, once for the whole table."""
        return list(dict.fromkeys(r.looser for r in self.rows if r.looser))

    def first_failures(self) -> dict[str, TrajectoryRow | None]:
        """For each check, the first row in order at which it fails (None: never)."""
        return {name: next((r for r in self.rows if r.statuses.get(name) == "fail"), None) for name in CHECKS}

    def early_warnings(self) -> list[str]:
        """Where ‖g‖/‖e‖ at a hidden state (the measure reference validity decides on; ‖g‖ in an
        older report) falls log-linearly over three or more epochs (a least-squares line through
        its log10 with R² ≥ 0.9) and is still above its floor: when the line reaches it, with the
        95 % interval of that epoch (:mod:`.forecast`), or saying that the epochs do not bound it.
        The collapse of the reference, seen before it happens; a ‖g‖ that falls because the loss
        does (a healthy run learning) is not one."""
        rows = [r for r in self.rows if r.epoch is not None]
        if len(rows) < 3:
            return []
        out = []
        for module, _ in rows[-1].g_norms:
            points = [(r.epoch, math.log10(g)) for r in rows for m, g in r.g_norms if m == module and g > 0]
            line = fit_line(points) if len(points) >= 3 else None  # type: ignore[arg-type]
            floor = math.log10(rows[-1].floor)
            if line is None or line.slope >= 0 or line.r2 < WARNING_R2 or points[-1][1] <= floor:
                continue
            measure = "‖g‖/‖e‖" if rows[-1].relative else "‖g‖"
            interval = line.crossing_interval(floor, INTERVAL_CONFIDENCE)
            bound = (
                f"{len(points)} epochs do not bound it at {100 * INTERVAL_CONFIDENCE:g} %"
                if interval is None
                else interval_said(interval)
            )
            out.append(
                f"{module}: {measure} falls 10× every {-1 / line.slope:.2g} epochs; at the "
                f"{f'{rows[-1].floor:g}'.replace('e-0', 'e-')} floor near "
                f"epoch {line.crossing(floor):.3g} ({bound})"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        first = self.first_failures()
        return {
            "rows": [
                {
                    **{k: v for k, v in vars(row).items() if k not in {"exit_code", "index", "name"}},
                    "exit_code": int(row.exit_code),
                }
                for row in self.rows
            ],
            "first_failure": {name: None if row is None else row.checkpoint for name, row in first.items()},
            "early_warnings": self.early_warnings(),
            "exit_code": int(self.exit_code),
        }


WARNING_R2 = 0.9


def trajectory(reports: Iterable[Mapping[str, Any]]) -> Trajectory:
    rows = [replace(row_from_report(r), index=i) for i, r in enumerate(reports)]
    names = [Path(r.checkpoint).name for r in rows]
    rows = [replace(r, name=n if names.count(n) == 1 else r.checkpoint) for r, n in zip(rows, names, strict=True)]
    if rows and all(r.epoch is not None for r in rows):
        rows.sort(key=lambda r: (r.epoch, r.checkpoint))
    else:
        rows.sort(key=lambda r: r.checkpoint)
    return Trajectory(rows)


def row_from_report(report: Mapping[str, Any]) -> TrajectoryRow:
    layers = report["layers"]
    growths = [la["growth"] for la in layers if la["growth"] is not None]
    epoch = (report.get("meta") or {}).get("epoch")
    relative = all(isinstance(la.get("g_rel"), int | float) for la in layers)
    return TrajectoryRow(
        checkpoint=report["checkpoint"],
        epoch=_epoch(epoch),
        accuracy=report["accuracy"] if report.get("accuracy") is not None else report["metric"]["value"],
        max_growth=max(growths) if growths else None,
        min_g_norm=min(la["g_norm"] for la in layers),
        headline=report["aggregate"]["headline"],
        accuracy_se=(report.get("metric") or {}).get("se"),
        headline_se=report["aggregate"].get("headline_se"),
        deep_gamma=deep_mean([la["cos"] for la in layers]),
        deep_gamma_se=report["aggregate"].get("deep_se"),
        looser=next(iter(looser_notes(report.get("notes", []))), None),
        statuses={c["name"]: c["status"] for c in report["checks"]},
        verdict=report["verdict"],
        exit_code=ExitCode(report["exit_code"]),
        g_norms=tuple((la["module"], la["g_rel"] if relative else la["g_norm"]) for la in layers),
        floor=_floor(report, relative),
        relative=relative,
        **_judged(report.get("judged")),
    )


def _judged(block: Mapping[str, Any] | None) -> dict[str, Any]:
    if block is None:
        return {}
    return {
        "judged_by": block["thresholds"],
        "taken": tuple(block["taken_from_report"]),
        "changed": tuple(block["changed"]),
        "verified": bool(block.get("verified")),
    }


def _floor(report: Mapping[str, Any], relative: bool) -> float:
    key = "min_relative_grad_norm" if relative else "min_grad_norm"
    value = ((report.get("config") or {}).get("reference_validity") or {}).get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 1e-7


def _epoch(value: object) -> float | None:
    """meta.epoch as a number to sort by; anything else (text, an int beyond float) is no epoch."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        epoch = float(value)
    except OverflowError:
        return None
    return epoch if math.isfinite(epoch) else None


def load_reports(
    paths: Iterable[Path],
    thresholds: Thresholds | None = None,
    by: str = "the default thresholds",
    require_key: bool = False,
) -> list[dict[str, Any]]:
    """JSON reports written by ``--json``: one report, or a list of them, per file; a
    ``.jsonl`` file (an :class:`fa_audit.AuditLog`) holds one report per line. Each is
    checked against its own numbers, then judged by ``thresholds`` (named ``by``; the
    defaults when None), never by the thresholds it carries
    (:func:`fa_audit.report.recheck.rejudge`); with ``FA_AUDIT_REPORT_KEY`` set, its HMAC must
    verify (with ``require_key``, a key must be set); without a key each report's ``judged``
    block says it was not verified."""
    reports: list[dict[str, Any]] = []
    for path in paths:
        text = read_text(path, "a JSON report", REPORT_BYTES)
        if path.name.endswith(".jsonl"):
            found = [parse_json(line, path) for line in text.splitlines() if line.strip()]
        else:
            loaded = parse_json(text, path)
            found = loaded if isinstance(loaded, list) else [loaded]
        if not found:
            raise InputError("holds no report (an empty list)", path)
        for report in found:
            _check_report(report, path)
            verified = verify(report, path, require_key)
            recheck(report, path)
            reports.append(rejudge(report, thresholds or Thresholds(), by, verified))
    return reports


def _check_report(report: Any, path: Path) -> None:
    """A report must match the shipped schema: everything the tables read is then there."""
    if not isinstance(report, dict):
        raise InputError(f"is not an fa-audit report: it holds a {type(report).__name__}, not a report object", path)
    if report.get("schema_version") not in READABLE_VERSIONS:
        raise InputError(
            f"is not an fa-audit report: schema_version is {report.get('schema_version')!r}, "
            f"this fa-audit reads {' and '.join(map(str, READABLE_VERSIONS))}",
            path,
        )
    root = schema()
    found = first_violation(report, root, root)
    if found is not None:
        raise InputError(f"is not a valid fa-audit report: {found}", path)
