"""A report read from a file is believed only as far as its own numbers go: its checks
are recomputed from its layers and thresholds, and its verdict and exit code from its
checks. A report that says TRUST over failed checks is an input error, not a pass."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from .checks import run_checks, verdict
from .config import Thresholds, merge
from .errors import InputError
from .report import Aggregate, BaselineInfo, LayerStats, Measurements


def _measurements(report: dict[str, Any]) -> Measurements:
    names = {f.name for f in fields(LayerStats)}
    return Measurements(
        layers=[LayerStats(**{k: v for k, v in layer.items() if k in names}) for layer in report["layers"]],
        accuracy=report["accuracy"],
        samples=report["samples"],
        aggregate=Aggregate(headline=report["aggregate"]["headline"], strategies={}),
        checkpoint_dtype=report["checkpoint_dtype"],
        saturated_fraction=report["saturated_fraction"],
    )


def _baseline(report: dict[str, Any]) -> BaselineInfo | None:
    given = report.get("baseline")
    return None if given is None else BaselineInfo(**given)


def recheck(report: dict[str, Any], path: Path) -> None:
    """Raise when the report's statuses, verdict or exit code are not what its numbers give."""
    try:
        thresholds = merge(Thresholds(), report["config"])
    except InputError as exc:
        raise InputError(f"holds a report whose config is not valid: {exc.problem}", path) from None
    measurements = _measurements(report)
    checks = run_checks(measurements, thresholds, _baseline(report))
    stated = {c["name"]: c["status"] for c in report["checks"]}
    for check in checks:
        if stated.get(check.name) != check.status.value:
            raise InputError(
                f"holds a report of {Path(report['checkpoint']).name} whose {check.name} says "
                f"{stated.get(check.name)!r}, but its own numbers and thresholds give {check.status.value!r}",
                path,
            )
    expected = verdict(checks, measurements)
    if report["verdict"] != expected.value or report["exit_code"] != int(expected.exit_code):
        raise InputError(
            f"holds a report of {Path(report['checkpoint']).name} that states {report['verdict']} "
            f"(exit code {report['exit_code']}) but whose checks give {expected.value}",
            path,
        )
