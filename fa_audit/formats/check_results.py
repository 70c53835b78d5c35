"""What the CI formats (SARIF, JUnit) say of each check: its description, and for each
check that did not pass, one text with the measured value, the threshold and the reasons."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..render.formatting import check_thresholds, check_value
from .base import Result

CHECK_DESCRIPTIONS = {
    "scale_stability": (
        "Hidden-state growth from block to block stays bounded",
        "Fails when a block's median growth ‖h_{l+1}‖/‖h_l‖ exceeds max_block_growth over its whole 95 % interval "
        "over the eval samples: the residual stream explodes, the structural cause of a collapsed backprop "
        "reference. An interval that straddles the limit is borderline: not assessed.",
    ),
    "reference_validity": (
        "The backprop gradient the cosines are measured against is exact and has not collapsed",
        "Fails on Mode 1, reference collapse (a hidden layer's median BP gradient per unit of output error below "
        "min_relative_grad_norm over its whole 95 % interval; straddling it is borderline), or when its float32 "
        "gradient disagrees with a float64 recomputation (numerical "
        "noise). A gradient that is small only because the loss is small (saturation) is a note, not a failure.",
    ),
    "depth_utility": (
        "The deep layers get useful credit and the trained blocks beat frozen random ones",
        "Fails on Mode 2, no depth utility: the accuracy margin over the frozen-random-blocks baseline lies below "
        "min_margin_pp with its interval over the eval samples, or too few deep layers have a cosine above their "
        "null band (credit reach).",
    ),
}


def reports_of(result: Result) -> list[dict[str, Any]]:
    """The JSON-shaped reports a result holds: one, a trajectory's, or a comparison's A and B."""
    if result.kind == "report":
        return [result.shown]
    if result.kind == "trajectory":
        return list(result.shown)
    return [result.shown["a"], result.shown["b"]]


def check_text(check: dict[str, Any]) -> str:
    """The check's measured value and threshold, then each reason, one per line."""
    values, thresholds = check.get("values", {}), check.get("thresholds", {})
    head = f"{check['name']} {check['status'].upper().replace('_', ' ')}: measured {check_value(check['name'], values)}"
    if thresholds:
        head += f"; threshold {check_thresholds(check['name'], thresholds, check.get('values'))}"
    return "\n".join([head, *check.get("messages", [])])


def failing_checks(report: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """Each check of ``report`` that failed or was not assessed, with its text."""
    for check in report["checks"]:
        if check["status"] != "pass":
            yield check, check_text(check)


def regressions_by_check(comparison: dict[str, Any]) -> dict[str, str]:
    """A comparison's regressions by the check that regressed (each is ``"<check>: ..."``)."""
    return {text.partition(":")[0]: text for text in comparison["regressions"]}
