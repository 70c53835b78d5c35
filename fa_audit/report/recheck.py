"""A report read from a file is believed only as far as its own numbers go. Its checks are
recomputed from its layers and its own thresholds (a report that says TRUST over failed
checks is an input error, not a pass), and then judged again by the reader's thresholds,
never by the ones a report carries: loosening them in a file changes nothing. What must be
taken from the report as written (per-layer numbers, accuracy, the baseline's accuracy) is
recorded in its ``judged`` block."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..checks import run_checks, verdict
from ..config import Thresholds, looser_notes, looser_than_protocol, merge
from ..errors import InputError
from . import Aggregate, BaselineInfo, LayerStats, Measurements


def _measurements(report: dict[str, Any]) -> Measurements:
    names = {f.name for f in fields(LayerStats)}
    return Measurements(
        layers=[LayerStats(**{k: v for k, v in layer.items() if k in names}) for layer in report["layers"]],
        accuracy=report["metric"]["value"] if "metric" in report else report["accuracy"],
        loss_head=report.get("loss_head", "cross_entropy"),
        metric=report["metric"]["name"] if "metric" in report else "accuracy",
        samples=report["samples"],
        aggregate=Aggregate(headline=report["aggregate"]["headline"], strategies={}),
        checkpoint_dtype=report["checkpoint_dtype"],
        saturated_fraction=report["saturated_fraction"],
        constant_loss=report.get("metric", {}).get("constant_loss"),
        perplexity=report.get("metric", {}).get("perplexity"),
    )


def _baseline(report: dict[str, Any]) -> BaselineInfo | None:
    given = report.get("baseline")
    return None if given is None else BaselineInfo(**given)


def _null_band_holds(layer: dict[str, Any]) -> str | None:
    """What is wrong with a layer's null band as written, or None: z is (Γ − μ)/σ, and a band
    is drawn (``null_draws``) or in closed form (``null_std_range``, which holds σ), not both."""
    cos, mean, std, z, bounds = (layer.get(k) for k in ("cos", "null_mean", "null_std", "z", "null_std_range"))
    said = None if z is None or cos is None or mean is None or not std else (cos - mean) / std
    if z is not None and said is not None and not math.isclose(z, said, rel_tol=1e-9):
        return f"z {z!r} is not (cos − null_mean) / null_std"
    if bounds is not None and layer.get("null_draws") is not None:
        return "states both null draws and a closed-form null"
    if bounds is not None and (std is None or not bounds[0] <= std <= bounds[1]):
        return "null_std lies outside its null_std_range"
    return None


WITH_INTERVALS = ("h_norm", "growth", "g_norm", "g_rel", "dir_stab", "rank_ratio")


def _intervals_hold(layer: dict[str, Any]) -> str | None:
    """What is wrong with a layer's intervals as written, or None: each holds its number."""
    for name in WITH_INTERVALS:
        value, interval = layer.get(name), layer.get(f"{name}_interval")
        if interval is not None and (value is None or not interval[0] <= value <= interval[1]):
            return f"{name} lies outside its {name}_interval"
    return None


def recheck(report: dict[str, Any], path: Path) -> None:
    """Raise when the report's statuses, verdict or exit code are not what its numbers give."""
    for layer in report["layers"]:
        wrong = _null_band_holds(layer) or _intervals_hold(layer)
        if wrong is not None:
            raise InputError(f"holds a report whose layer {layer['name']} {wrong}", path)
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


def rejudge(report: dict[str, Any], thresholds: Thresholds, by: str, verified: bool = False) -> dict[str, Any]:
    """``report`` with its checks, verdict and exit code recomputed by ``thresholds`` (named
    ``by``), and a ``judged`` block saying so: what was taken from the file, what changed."""
    measurements, baseline = _measurements(report), _baseline(report)
    checks = run_checks(measurements, thresholds, baseline)
    expected = verdict(checks, measurements)
    stated: dict[str, str] = {c["name"]: c["status"] for c in report["checks"]}
    taken = ["per-layer numbers", "accuracy"]
    if baseline is not None:
        where = f", {baseline.path}" if baseline.path else ""
        taken.append(f"baseline accuracy {baseline.accuracy:.4f} ({baseline.source}{where})")
    looser, notes = looser_than_protocol(thresholds), report.get("notes", [])
    stale = set(looser_notes(notes))  # the writer's thresholds: these judge it no longer
    return {
        **{k: v for k, v in report.items() if k != "hmac"},  # it no longer holds the bytes the HMAC was of
        "notes": [n for n in notes if n not in stale] + ([looser] if looser else []),
        "config": thresholds.to_dict(),
        "checks": [c.to_dict() for c in checks],
        "verdict": expected.value,
        "exit_code": int(expected.exit_code),
        "judged": {
            "thresholds": by,
            "taken_from_report": taken,
            "verified": verified,
            "changed": [
                f"{c.name} {stated.get(c.name)} -> {c.status.value}"
                for c in checks
                if stated.get(c.name) != c.status.value
            ],
        },
    }
