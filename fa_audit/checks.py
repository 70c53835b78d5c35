"""Numbers + thresholds -> the three checks and the verdict (docs/measurements.md). Pure functions."""

from __future__ import annotations

from .config import Thresholds
from .null_band import Reach, reach
from .report import BaselineInfo, CheckResult, LayerStats, Measurements, Status, Verdict

SCALE, REFERENCE, DEPTH = "scale_stability", "reference_validity", "depth_utility"
SATURATION_NOTE = 0.02
"""Above this fraction of saturated eval samples, reference validity says so in a note."""


def scale_stability(m: Measurements, t: Thresholds) -> CheckResult:
    limit = t.scale_stability.max_block_growth
    growing = [layer for layer in m.layers if layer.growth is not None]
    if not growing:
        return CheckResult(
            SCALE,
            Status.NOT_ASSESSED,
            {},
            {"max_block_growth": limit},
            ["the network has a single hidden state, so there is no block growth to measure"],
        )
    worst = max(growing, key=lambda layer: layer.growth or 0.0)
    values = {"max_growth": worst.growth, "layer": worst.name}
    messages = [
        f"{layer.name}→next ({layer.module}): growth {layer.growth:.3g}× > {limit:g}×: the residual stream "
        "explodes, the structural cause of reference collapse"
        for layer in growing
        if (layer.growth or 0.0) > limit
    ]
    status = Status.FAIL if messages else Status.PASS
    return CheckResult(SCALE, status, values, {"max_block_growth": limit}, messages)


def reference_validity(m: Measurements, t: Thresholds) -> CheckResult:
    rv = t.reference_validity
    thresholds = {
        "min_grad_norm": rv.min_grad_norm,
        "min_fp64_agreement": rv.min_fp64_agreement,
        "max_direction_stability": rv.max_direction_stability,
        "direction_stability_fails": rv.direction_stability_fails,
    }
    weakest = min(m.layers, key=lambda layer: layer.g_norm)
    agreements = [layer.fp64_agree for layer in m.layers if layer.fp64_agree is not None]
    stabilities = [layer.dir_stab for layer in m.layers if layer.dir_stab is not None]
    values = {
        "min_grad_norm": weakest.g_norm,
        "layer": weakest.name,
        "min_fp64_agreement": min(agreements) if agreements else None,
        "max_direction_stability": max(stabilities) if stabilities else None,
    }
    messages: list[str] = []
    notes: list[str] = []
    drifting = [
        layer for layer in m.layers if layer.dir_stab is not None and layer.dir_stab > rv.max_direction_stability
    ]
    if drifting:
        listed = ", ".join(f"{layer.name} {layer.dir_stab:.2f}" for layer in drifting)
        line = (
            f"direction stability > {rv.max_direction_stability:g} at {listed}: drift-dominated reference, "
            "the gradient direction is shared across batches more than per-sample credit would be"
        )
        (messages if rv.direction_stability_fails else notes).append(line)
    for layer in m.layers:
        if layer.g_norm < rv.min_grad_norm:
            messages.append(
                f"{layer.name} ({layer.module}): BP gradient norm {layer.g_norm:.3g} < {rv.min_grad_norm:g}: the "
                "reference is at the numerical floor, so a cosine against it is a cosine to noise"
            )
        if layer.fp64_agree is not None and layer.fp64_agree < rv.min_fp64_agreement:
            messages.append(
                f"{layer.name} ({layer.module}): float32/float64 gradient agreement {layer.fp64_agree:.4f} < "
                f"{rv.min_fp64_agreement:g}: the float32 reference is corrupted by rounding"
            )
    if weakest.g_norm < 1e-8:
        notes.append(
            f"{weakest.name}: gradient norm {weakest.g_norm:.2g} < 1e-8: any eps-clamped cosine "
            "(the library default eps is 1e-8) would be distorted here"
        )
    if m.checkpoint_dtype == "float16":
        notes.append(
            "float16 checkpoint: gradients near 1e-8 underflow in float16 (bf16 is fine); fa-audit measured in float32"
        )
    if m.saturated_fraction > SATURATION_NOTE:
        notes.append(
            f"{100 * m.saturated_fraction:.1f}% of eval samples have a saturated softmax (1 − p < 1e-7): a training "
            "loop that computes its loss in float32, as most do, fed them rounding noise instead of a gradient "
            "(fa-audit's own loss head is float64)"
        )
    if len(agreements) < len(m.layers):
        notes.append("float64 agreement was not defined for some layers (all-zero gradients)")
    status = Status.FAIL if messages else Status.PASS
    return CheckResult(REFERENCE, status, values, thresholds, messages, notes)


def layer_reach(layer: LayerStats, null_z: float) -> Reach | None:
    """Whether the layer's cosine is above its null band (None: it has no z)."""
    return None if layer.z is None else reach(layer.z, layer.null_draws, null_z)


def _credit_reach(m: Measurements, t: Thresholds) -> tuple[Status, dict[str, object], list[str], list[str]]:
    """Status, values, messages and notes of the credit-reach part of depth utility."""
    du = t.depth_utility
    deep = m.layers[1:]
    if not deep:
        return Status.NOT_ASSESSED, {}, ["credit reach: the network has no deep layers (h1..hL)"], []
    refused = [layer for layer in deep if layer.z is None]
    if refused:
        why = refused[0].refused or "no null band (too few null draws or a zero spread)"
        return Status.NOT_ASSESSED, {}, [f"credit reach not assessed: {refused[0].name}: {why}"], []
    where = {layer.name: layer_reach(layer, du.null_z) for layer in deep}
    reached = [layer for layer in deep if where[layer.name] is Reach.REACHED]
    borderline = [layer for layer in deep if where[layer.name] is Reach.BORDERLINE]
    values: dict[str, object] = {
        "layer_reach": {name: str(status) for name, status in where.items()},
        "layers_above_null": [layer.name for layer in reached],
        "layers_borderline": [layer.name for layer in borderline],
    }
    decided = len(deep) - len(borderline)
    said = _borderline_phrase(borderline, du.null_z)
    if not decided:
        return Status.NOT_ASSESSED, values, [f"credit reach not assessed: every deep layer is {said}"], []
    share = len(reached) / decided
    values["credit_reach"] = share
    if share >= du.min_credit_reach:
        return Status.PASS, values, [], [f"credit reach {share:.2f} leaves out {said}"] if borderline else []
    carriers = _carriers(m.layers, du.null_z)
    return (
        Status.FAIL,
        values,
        [
            f"credit reach {share:.2f} < {du.min_credit_reach:g}: only {len(reached)} of {decided} "
            f"{'decided ' if borderline else ''}deep layers have a cosine above the null band (z ≥ {du.null_z:g}); "
            f"credit concentrated at the ends: the aggregate Γ is carried by {_layers_phrase(carriers)}"
            + (f"; {said}" if borderline else "")
        ],
        [],
    )


def _borderline_phrase(layers: list[LayerStats], null_z: float) -> str:
    """The borderline layers with their z intervals, said as the check counts them."""
    listed = ", ".join(
        f"{layer.name} (z {layer.z:.2f}, 99.9 % interval {low:.2f} … {high:.2f} after {layer.null_draws} null draws)"
        for layer in layers
        if layer.z is not None and layer.z_interval is not None
        for low, high in [layer.z_interval]
    )
    return f"borderline at z = {null_z:g}, counted neither as reached nor as missing: {listed}"


def _carriers(layers: list[LayerStats], null_z: float) -> list[str]:
    return [layer.name for layer in layers if layer_reach(layer, null_z) is Reach.REACHED]


def _layers_phrase(names: list[str]) -> str:
    if not names:
        return "no layer: none is above its null band"
    return f"{len(names)} layer{'s' if len(names) > 1 else ''} ({', '.join(names)})"


def depth_utility(m: Measurements, t: Thresholds, baseline: BaselineInfo | None) -> CheckResult:
    du = t.depth_utility
    thresholds = {"min_margin_pp": du.min_margin_pp, "min_credit_reach": du.min_credit_reach, "null_z": du.null_z}
    values: dict[str, object] = {"accuracy": m.accuracy, "baseline_accuracy": None}
    failures: list[str] = []
    unassessed: list[str] = []
    notes: list[str] = []
    if baseline is None:
        functional = Status.NOT_ASSESSED
        unassessed.append(
            "functional part not assessed: no frozen-blocks baseline (pass --baseline CKPT or --baseline-accuracy)"
        )
    else:
        margin = 100.0 * (m.accuracy - baseline.accuracy)
        values.update(baseline_accuracy=baseline.accuracy, baseline_source=baseline.source, margin_pp=margin)
        notes.append(_baseline_note(baseline))
        functional = Status.PASS if margin >= du.min_margin_pp else Status.FAIL
        if functional is Status.FAIL:
            failures.append(
                f"accuracy margin over the frozen-random-blocks baseline {margin:+.2f} pp < {du.min_margin_pp:g} pp: "
                "the trained deep blocks do not beat the same blocks left at random initialisation"
            )
    reach_status, reach_values, reach_messages, reach_notes = _credit_reach(m, t)
    values.update(reach_values)
    notes.extend(reach_notes)
    (unassessed if reach_status is Status.NOT_ASSESSED else failures).extend(reach_messages)
    values["functional"], values["credit_reach_status"] = functional.value, reach_status.value
    parts = {functional, reach_status}
    status = (
        Status.FAIL if Status.FAIL in parts else Status.NOT_ASSESSED if Status.NOT_ASSESSED in parts else Status.PASS
    )
    if status is Status.FAIL:  # a part left unassessed beside a failing one is a note, not a failure
        return CheckResult(DEPTH, status, values, thresholds, failures, notes + unassessed)
    return CheckResult(DEPTH, status, values, thresholds, failures + unassessed, notes)


def _baseline_note(baseline: BaselineInfo) -> str:
    if baseline.source == "supplied":
        return (
            f"baseline accuracy {baseline.accuracy:.4f} supplied by the user (--baseline-accuracy), not measured here"
        )
    if baseline.source in {"fitted", "cache"}:
        how = "fitted here" if baseline.source == "fitted" else "fitted earlier, read from the cache"
        return f"frozen-blocks baseline {how} (seeded init, deep blocks frozen, interface trained with AdamW)"
    at_init = {
        True: "its deep blocks equal the seeded initialisation of its meta.seed",
        False: "its deep blocks DIFFER from the seeded initialisation of its meta.seed: check that it is a "
        "frozen-blocks baseline",
        None: "it names no meta.seed, so its deep blocks could not be compared with a fresh initialisation",
    }[baseline.deep_blocks_at_init]
    return f"baseline {baseline.path} evaluated here on the same eval data; {at_init}"


def run_checks(m: Measurements, t: Thresholds, baseline: BaselineInfo | None) -> list[CheckResult]:
    return [scale_stability(m, t), reference_validity(m, t), depth_utility(m, t, baseline)]


def verdict(checks: list[CheckResult], m: Measurements) -> Verdict:
    statuses = {c.status for c in checks}
    if Status.FAIL in statuses:
        return Verdict.WALK_BACK
    if Status.NOT_ASSESSED in statuses or any(layer.refused for layer in m.layers):
        return Verdict.INCOMPLETE
    return Verdict.TRUST
