"""Numbers + thresholds -> the three checks and the verdict (docs/measurements.md). Pure functions."""

from __future__ import annotations

from ..config import ReferenceValidity, Thresholds
from ..measure.null_band import Reach, reach
from ..report import BaselineInfo, CheckResult, LayerStats, Measurements, Status, Verdict, interval_said
from .margin import interval

SCALE, REFERENCE, DEPTH = "scale_stability", "reference_validity", "depth_utility"
SATURATION_NOTE = 0.02
"""Above this fraction of saturated eval samples, reference validity says so in a note."""


def scale_stability(m: Measurements, t: Thresholds) -> CheckResult:
    """Fails where a block's median growth is above the limit for every eval set its interval allows;
    a layer whose interval straddles the limit is borderline, and leaves the check not assessed when
    no other layer fails (docs/measurements.md, "The medians' intervals")."""
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
    past = {layer.name: _past(layer.growth, layer.growth_interval, limit, above=True) for layer in growing}
    borderline = [layer for layer in growing if past[layer.name] is None]
    values = {
        "max_growth": worst.growth,
        "max_growth_interval": _listed(worst.growth_interval),
        "layer": worst.name,
        "layers_borderline": [layer.name for layer in borderline],
    }
    messages = [
        f"{layer.name}→next ({layer.module}): growth {layer.growth:.3g}×{_interval_said(layer.growth_interval)} > "
        f"{limit:g}×: the residual stream explodes, the structural cause of reference collapse"
        for layer in growing
        if past[layer.name]
    ]
    thresholds = {"max_block_growth": limit}
    if not borderline:
        return CheckResult(SCALE, Status.FAIL if messages else Status.PASS, values, thresholds, messages)
    said = _growth_borderline_phrase(borderline, limit)
    if messages:
        return CheckResult(SCALE, Status.FAIL, values, thresholds, messages, [said])
    return CheckResult(SCALE, Status.NOT_ASSESSED, values, thresholds, [f"not assessed: {said}"])


def _growth_borderline_phrase(layers: list[LayerStats], limit: float) -> str:
    listed = ", ".join(
        f"{layer.name}→next ({layer.module}) {layer.growth:.3g}×{_interval_said(layer.growth_interval)}"
        for layer in layers
    )
    return (
        f"growth borderline at {listed}: the interval straddles {limit:g}×, so another eval set of this size could "
        "put it on either side"
    )


def _past(value: float | None, interval: tuple[float, float] | None, limit: float, above: bool) -> bool | None:
    """Whether a number with its interval (a median, dir_stab) is past ``limit`` (above it, or below it
    where not ``above``): True when its whole interval is, False when none of it is, None (borderline)
    when the interval straddles it; one without an interval (a report written before them, too few
    samples) is judged on itself."""
    if value is None:
        return False
    if interval is None:
        return value > limit if above else value < limit
    low, high = interval
    if above:
        return True if low > limit else (False if high <= limit else None)
    return True if high < limit else (False if low >= limit else None)


def _interval_said(interval: tuple[float, float] | None) -> str:
    if interval is None:
        return ""
    return f" ({interval_said(interval)})"


def _listed(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else list(interval)


def reference_validity(m: Measurements, t: Thresholds) -> CheckResult:
    """Fails on a reference that is not backprop's true gradient at a usable size: numerical
    noise (float32 disagrees with float64) or collapse (the gradient per unit of output error
    below the floor: Mode 1 when the stream grew). A gradient that is small only because the
    loss is small (saturation) is a note: its cosine is exact and float64 confirms it."""
    rv = t.reference_validity
    thresholds = {
        "min_relative_grad_norm": rv.min_relative_grad_norm,
        "min_grad_norm": rv.min_grad_norm,
        "min_fp64_agreement": rv.min_fp64_agreement,
        "max_direction_stability": rv.max_direction_stability,
        "direction_stability_fails": rv.direction_stability_fails,
    }
    weakest = min(m.layers, key=lambda layer: layer.g_norm)
    relative = [layer for layer in m.layers if layer.g_rel is not None]
    weakest_rel = min(relative, key=lambda layer: layer.g_rel or 0.0) if relative else None
    agreements = [layer.fp64_agree for layer in m.layers if layer.fp64_agree is not None]
    stabilities = [layer.dir_stab for layer in m.layers if layer.dir_stab is not None]
    values: dict[str, object] = {
        "min_relative_grad_norm": None if weakest_rel is None else weakest_rel.g_rel,
        "relative_layer": None if weakest_rel is None else weakest_rel.name,
        "min_grad_norm": weakest.g_norm,
        "layer": weakest.name,
        "diagnostic_b": weakest.g_norm < rv.min_grad_norm,
        "min_fp64_agreement": min(agreements) if agreements else None,
        "max_direction_stability": max(stabilities) if stabilities else None,
        "mode": None,
        "input_grad_check": m.input_grad_check,
    }
    messages: list[str] = []
    notes: list[str] = []
    limit = rv.max_direction_stability
    drift = {layer.name: _past(layer.dir_stab, layer.dir_stab_interval, limit, above=True) for layer in m.layers}
    # a note lists each layer above the limit; a failure (direction_stability_fails) only those above it
    # over their whole interval, the others borderline
    drifting = [
        layer
        for layer in m.layers
        if (drift[layer.name] if rv.direction_stability_fails else (layer.dir_stab or 0.0) > limit)
    ]
    drift_borderline = [layer for layer in m.layers if rv.direction_stability_fails and drift[layer.name] is None]
    if drifting:
        listed = ", ".join(f"{layer.name} {layer.dir_stab:.2f}{_plus_minus(layer.dir_stab_se)}" for layer in drifting)
        line = (
            f"direction stability > {limit:g} at {listed}: drift-dominated reference, "
            "the gradient direction is shared across batches more than per-sample credit would be"
        )
        (messages if rv.direction_stability_fails else notes).append(line)
    grew = _stream_growth(m, t)
    fell = {layer.name: _collapsed(layer, rv.min_relative_grad_norm, rv.min_grad_norm) for layer in m.layers}
    collapsed = [layer for layer in m.layers if fell[layer.name]]
    near_floor = [layer for layer in m.layers if fell[layer.name] is None]
    if collapsed:
        messages.append(_collapse_message(collapsed, rv.min_relative_grad_norm, rv.min_grad_norm, grew))
        values["mode"] = MODE_1 if grew is not None else None
    messages += [
        _agreement_message(layer, rv.min_fp64_agreement)
        for layer in m.layers
        if layer.fp64_agree is not None and layer.fp64_agree < rv.min_fp64_agreement
    ]
    messages += [_spot_message(layer, rv.min_fp64_agreement) for layer in m.layers if _spot_fails(layer, rv)]
    small = [layer for layer in m.layers if layer.g_norm < rv.min_grad_norm and fell[layer.name] is False]
    if small:
        notes.append(_saturation_note(small, m, rv.min_grad_norm))
    if weakest.g_norm < 1e-8:
        notes.append(
            f"{weakest.name}: gradient norm {weakest.g_norm:.2g} < 1e-8: any eps-clamped cosine "
            "(the library default eps is 1e-8) would be distorted here (fa-audit's has no eps)"
        )
    if m.checkpoint_dtype == "float16":
        notes.append(
            "float16 checkpoint: gradients near 1e-8 underflow in float16 (bf16 is fine); fa-audit measured in float32"
        )
    if m.saturated_fraction > SATURATION_NOTE:
        notes.append(
            f"{100 * m.saturated_fraction:.1f}% of eval samples have a saturated softmax (1 − p < 1e-7): a training "
            "loop that computes its loss in float32, as most do, fed them rounding noise instead of a gradient "
            "(fa-audit's loss head is exact in float64, and its backward is scaled per sample so that none underflows)"
        )
    notes += [_zero_rows_note(layer, m.samples) for layer in m.layers if layer.zero_norm_rows]
    unproved = [layer for layer in m.layers if layer.grad_check is None and layer.refused is None]
    if unproved:
        listed = ", ".join(f"{layer.name} ({layer.module})" for layer in unproved)
        through = m.input_grad_check
        vouched = (
            f"the gradient at the input, which a backward replaced anywhere before the logits would change, agrees "
            f"with finite differences to {through:.1e}"
            if through is not None
            else "the input is not continuous, so its gradient cannot vouch for them"
        )
        notes.append(
            f"not proved against finite differences: {listed}: no single module produces or reads it, so it could "
            f"not be nudged alone; {vouched}, and the audit found no module replacing its backward"
        )
    if len(agreements) < len(m.layers):
        notes.append("float64 agreement was not defined for some layers (all-zero gradients)")
    undecided = []
    if near_floor:
        floor = f"the floor {rv.min_relative_grad_norm:g}"
        what = "the BP gradient per unit of output error"
        undecided.append(_straddling(near_floor, "g_rel", ".3g", what, floor, "reference collapse"))
    if drift_borderline:
        side = "a drift-dominated reference"
        undecided.append(_straddling(drift_borderline, "dir_stab", ".2f", "direction stability", f"{limit:g}", side))
    values["layers_borderline"] = list(dict.fromkeys(layer.name for layer in [*near_floor, *drift_borderline]))
    if undecided and not messages:
        said = [f"not assessed: {line}" for line in undecided]
        return CheckResult(REFERENCE, Status.NOT_ASSESSED, values, thresholds, said, notes)
    notes += undecided
    status = Status.FAIL if messages else Status.PASS
    return CheckResult(REFERENCE, status, values, thresholds, messages, notes)


def _straddling(layers: list[LayerStats], field: str, digits: str, what: str, limit: str, side: str) -> str:
    """The layers whose ``field`` is borderline, each with its value (``digits``) and interval, said
    as ``what``: its interval straddles ``limit``, on the two sides of which lie ``side`` and not."""
    listed = ", ".join(
        f"{layer.name} ({layer.module}) {value:{digits}}{_interval_said(getattr(layer, f'{field}_interval'))}"
        for layer in layers
        if (value := getattr(layer, field)) is not None
    )
    return (
        f"{what} is borderline at {listed}: the interval straddles {limit}, so another eval set of this size "
        f"could put it on either side of {side}"
    )


def _off_alone(agree: float, alone: float | None) -> bool:
    """Whether the checked rows' float32 gradients recomputed as a batch of their own are off
    float64 by at least half as much as the audit's were: float32 itself is off on them."""
    return alone is None or 1 - alone >= (1 - agree) / 2


def _agreement_message(layer: LayerStats, threshold: float) -> str:
    agree, alone = layer.fp64_agree or 0.0, layer.fp64_agree_alone
    found = (
        f"{layer.name} ({layer.module}): float32/float64 gradient agreement {agree:.4f} < {threshold:g} on the first "
        "batch's rows"
    )
    if _off_alone(agree, alone):
        also = "" if alone is None else f" ({alone:.4f} recomputed in float32 as a batch of their own: float32 is off)"
        return (
            f"numerical noise: {found}{also}: the float32 reference is corrupted by rounding (a stream grown past "
            "float32's digits), or the model's backward holds only in float64"
        )
    return (
        f"{found}, but {alone:.4f} recomputed in float32 as a batch of their own: the model's backward depends on "
        "the batch or its size, so the reference is not backprop's"
    )


def _spot_fails(layer: LayerStats, rv: ReferenceValidity) -> bool:
    """Random rows of the whole pass below the threshold and below every row of the first batch:
    not the first batch's rounding, but a backward that is true only where the audit looked first."""
    spot, floor = layer.fp64_agree_spot, layer.fp64_agree_min
    return spot is not None and floor is not None and spot < rv.min_fp64_agreement and spot < floor


def _spot_message(layer: LayerStats, threshold: float) -> str:
    """Float32 itself where the rows' own float32 recomputation is off by at least half as much
    (rounding cannot be told from a backward forged for float64 or for the first batch); else a
    backward that depends on the audit's batches."""
    spot, alone = layer.fp64_agree_spot or 0.0, layer.fp64_agree_spot_alone
    found = (
        f"{layer.name} ({layer.module}): the float32 gradients of rows drawn at random from the whole pass agree "
        f"with their float64 recomputation only to {spot:.4f} (< {threshold:g}), below every row of the first "
        f"batch (its least {layer.fp64_agree_min:.4f})"
    )
    if alone is not None and _off_alone(spot, alone):
        return (
            f"{found}, and to {alone:.4f} recomputed in float32 as a batch of their own: float32 itself is off on "
            "these rows, not the audit's batches: rounding (a stream grown past float32's digits), or a backward "
            "that holds only in float64 or only where the audit looked first"
        )
    alone_said = "" if alone is None else f"; recomputed in float32 as a batch of their own they agree to {alone:.4f}"
    return (
        f"{found}{alone_said}: the model's backward depends on the batch, its size or the precision, so the "
        "reference is not backprop's"
    )


MODE_1, MODE_2 = "mode_1", "mode_2"
"""The protocol's two failure modes, as the JSON names them (``modes`` and each check's ``values.mode``)."""


def _collapsed(layer: LayerStats, min_relative: float, min_norm: float) -> bool | None:
    """The gradient per unit of output error below the floor over its whole interval (None: the
    interval straddles it); a report from before that measure (no ``g_rel``) is judged on ‖g‖
    itself, as it was then."""
    if layer.g_rel is None:
        return layer.g_norm < min_norm
    return _past(layer.g_rel, layer.g_rel_interval, min_relative, above=False)


def _stream_growth(m: Measurements, t: Thresholds) -> LayerStats | None:
    """The layer after which the stream grew past scale stability's limit the most, or may have (its
    interval straddles the limit): what a collapse is then named after (None: nowhere)."""
    limit = t.scale_stability.max_block_growth
    growing = [layer for layer in m.layers if _past(layer.growth, layer.growth_interval, limit, True) is not False]
    return max(growing, key=lambda layer: layer.growth or 0.0) if growing else None


def _collapse_message(layers: list[LayerStats], min_relative: float, min_norm: float, grew: LayerStats | None) -> str:
    """One sentence for every collapsed layer: the decision's measure and the protocol's diagnostic (b) beside it."""
    if all(layer.g_rel is None for layer in layers):  # an older report
        listed = ", ".join(f"{layer.name} ({layer.module}) {layer.g_norm:.3g}" for layer in layers)
        measured = f"BP gradient norm {listed} < {min_norm:g}"
    else:
        listed = ", ".join(f"{layer.name} ({layer.module}) {layer.g_rel:.3g}" for layer in layers if layer.g_rel)
        floor = sum(layer.g_norm < min_norm for layer in layers)
        measured = (
            f"the BP gradient per unit of output error is {listed} < {min_relative:g} (median ‖g‖ below the "
            f"protocol's floor {min_norm:g}, its diagnostic (b), at {floor} of these {len(layers)})"
        )
    if grew is None:
        return (
            f"reference collapse: {measured}: the gradient vanishes on its way down from the output (no block grew "
            "the stream past scale stability's limit), so Γ there compares the credit with a gradient too small to "
            "train those layers"
        )
    return (
        f"Mode 1 (reference collapse): {measured}, after the stream grew {grew.growth:.3g}× at {grew.name}: the "
        "reference collapsed with the exploding stream (a terminal LayerNorm divides the gradient by ‖h‖), so Γ "
        "there compares the credit with a gradient too small to train those layers"
    )


def _saturation_note(small: list[LayerStats], m: Measurements, min_norm: float) -> str:
    listed = ", ".join(f"{layer.name} {layer.g_norm:.2g}" for layer in small)
    relative = [layer.g_rel for layer in small if layer.g_rel is not None]
    agreements = [layer.fp64_agree for layer in small if layer.fp64_agree is not None]
    per_error = f"; per unit of output error it is ≥ {min(relative):.3g}" if relative else ""
    confirmed = f", and float64 confirms the float32 gradient (agreement ≥ {min(agreements):.4f})" if agreements else ""
    return (
        f"saturation, not collapse: median ‖g‖ {listed} is below the protocol's floor {min_norm:g} (its diagnostic "
        f"(b)) because the loss is small ({100 * m.saturated_fraction:.1f}% of samples saturated){per_error}"
        f"{confirmed}: the cosines are exact; not a failure"
    )


def _zero_rows_note(layer: LayerStats, samples: int) -> str:
    return (
        f"{layer.name} ({layer.module}): {layer.zero_norm_rows} of {samples} samples have an exactly zero BP "
        "gradient or credit there (no path from the loss reaches them, e.g. dead units), so Γ is the mean over "
        "the others"
    )


def layer_reach(layer: LayerStats, null_z: float) -> Reach | None:
    """Whether the layer's cosine is above its null band (None: it has no z)."""
    return None if layer.z is None else reach(layer.z, layer.z_interval, null_z)


def _credit_reach(m: Measurements, t: Thresholds) -> tuple[Status, dict[str, object], list[str], list[str]]:
    """Status, values, messages and notes of the credit-reach part of depth utility."""
    du = t.depth_utility
    deep = m.layers[du.first_deep_layer :]
    if not deep:
        return (
            Status.NOT_ASSESSED, {}, [f"credit reach: the network has no deep layers (h{du.first_deep_layer}..hL)"], []
        )  # fmt: skip
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
        starved = [_starved_note(m.layers, layer) for layer in deep if where[layer.name] is Reach.MISSING]
        return (
            Status.PASS,
            values,
            [],
            starved + ([f"credit reach {share:.2f} leaves out {said}"] if borderline else []),
        )
    carriers = _carriers(m.layers, du.null_z)
    return (
        Status.FAIL,
        values,
        [
            f"Mode 2 (no depth utility): credit reach {share:.2f} < {du.min_credit_reach:g}: only {len(reached)} of "
            f"{decided} "
            f"{'decided ' if borderline else ''}deep layers have a cosine above the null band (z ≥ {du.null_z:g}); "
            f"credit concentrated at the ends: the aggregate Γ is carried by {_layers_phrase(carriers)}"
            + (f"; {said}" if borderline else "")
        ],
        [],
    )


def _borderline_phrase(layers: list[LayerStats], null_z: float) -> str:
    """The borderline layers with their z intervals, said as the check counts them."""
    listed = ", ".join(
        f"{layer.name} (z {layer.z:.2f}, "
        + (
            f"99.9 % interval {low:.2f} … {high:.2f} after {layer.null_draws} null draws)"
            if layer.null_draws
            else f"{low:.2f} … {high:.2f} by the closed-form null's bound)"
        )
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


BOTTLENECK = 4
"""A hidden state this many times narrower than the next is named as a bottleneck when the next gets no credit."""


def _starved_note(layers: list[LayerStats], layer: LayerStats) -> str:
    """A deep layer inside its null band while credit reach passes, with the narrow input that explains it."""
    line = (
        f"{layer.name} ({layer.module}) gets no credit above its null band (z {layer.z:.2f}) although credit reach "
        "passes: the method's signal does not reach this layer"
    )
    index = layers.index(layer)
    before = layers[index - 1] if index else None
    if before is not None and before.width and layer.width and before.width * BOTTLENECK <= layer.width:
        line += (
            f"; its input {before.name} ({before.module}) is {before.width} units wide against {layer.width} here: "
            "a bottleneck (with DFA, the layer after a narrow one cannot align its credit through it)"
        )
    return line


def _rank_notes(m: Measurements, min_ratio: float) -> list[str]:
    """Rank collapse where the ratio's whole interval is below ``min_ratio``; where it straddles, that
    it may be (a ratio without an interval, in an older report, is judged on itself)."""
    notes = []
    for layer in m.layers:
        if layer.rank_ratio is None or layer.credit_rank is None or layer.bp_rank is None:
            continue
        below = _past(layer.rank_ratio, layer.rank_ratio_interval, min_ratio, above=False)
        if below is False:
            continue
        measured = (
            f"{layer.name} ({layer.module}): the credit's effective rank {layer.credit_rank:.3g} is "
            f"{layer.rank_ratio:.3g}{_interval_said(layer.rank_ratio_interval)} of the BP gradient's "
            f"{layer.bp_rank:.3g}"
        )
        notes.append(
            f"rank collapse at {measured} (< {min_ratio:g}): the credit spans far fewer directions than the "
            "gradient it stands for"
            if below
            else f"possible rank collapse at {measured}, an interval that straddles {min_ratio:g}: the credit may "
            "span far fewer directions than the gradient it stands for"
        )
    return notes


def _margin(
    m: Measurements, t: Thresholds, baseline: BaselineInfo, values: dict[str, object]
) -> tuple[Status, str | None]:
    """The functional part: the margin's interval over the eval samples against min_margin_pp;
    not assessed where the baseline leaves less headroom than the margin, or the interval straddles it."""
    du = t.depth_utility
    if m.metric == "loss":
        return _loss_margin(m, t, baseline, values)
    margin = 100.0 * (m.accuracy - baseline.accuracy)
    low, high = interval(margin, baseline.margin_se_pp, du.margin_confidence)
    values.update(baseline_accuracy=baseline.accuracy, baseline_source=baseline.source, margin_pp=margin)
    values.update(margin_se_pp=baseline.margin_se_pp, margin_interval_pp=[low, high])
    headroom = 100.0 * (1.0 - baseline.accuracy)
    said = _interval_phrase(margin, low, high, baseline, du.margin_confidence, m.samples)
    if headroom < du.min_margin_pp:
        return Status.NOT_ASSESSED, (
            f"functional part not assessed: the frozen-blocks baseline already reaches "
            f"{100 * baseline.accuracy:.2f} %, leaving {headroom:.2f} pp of headroom, less than the "
            f"{du.min_margin_pp:g} pp margin asked for: on this task depth cannot show in accuracy"
        )
    if low >= du.min_margin_pp:
        return Status.PASS, None
    if high < du.min_margin_pp:
        return Status.FAIL, (
            f"Mode 2 (no depth utility): accuracy margin over the frozen-random-blocks baseline {said}, below "
            f"{du.min_margin_pp:g} pp: the trained deep blocks do not beat the same blocks left at random "
            "initialisation"
        )
    return Status.NOT_ASSESSED, (
        f"functional part borderline: accuracy margin {said} straddles {du.min_margin_pp:g} pp: this eval set cannot "
        "tell whether the deep blocks beat their random initialisation by the margin (more eval samples would)"
    )


def _loss_margin(
    m: Measurements, t: Thresholds, baseline: BaselineInfo, values: dict[str, object]
) -> tuple[Status, str | None]:
    """The functional part where the metric is the loss: the relative reduction of the mean eval
    loss, 100 (L_base − L_model) / L_base, its interval against min_loss_reduction_pct."""
    du = t.depth_utility
    values.update(baseline_accuracy=baseline.accuracy, baseline_source=baseline.source, margin_unit="%")
    if baseline.accuracy <= 0:
        return Status.NOT_ASSESSED, (
            "functional part not assessed: the frozen-blocks baseline's eval loss is 0, so no reduction of it can show"
        )
    margin = 100.0 * (baseline.accuracy - m.accuracy) / baseline.accuracy
    low, high = interval(margin, baseline.margin_se_pp, du.margin_confidence)
    values.update(margin_pct=margin, margin_se_pp=baseline.margin_se_pp, margin_interval_pct=[low, high])
    said = f"{margin:+.1f} %"
    if baseline.margin_se_pp is not None:
        how = "paired" if baseline.paired else "unpaired"
        said += f" ({100 * du.margin_confidence:g} % interval {low:+.1f} … {high:+.1f} %, {how}, {m.samples} samples)"
    said = f"{m.loss_head} loss {m.accuracy:.4g} against the frozen-blocks baseline's {baseline.accuracy:.4g}: {said}"
    if low >= du.min_loss_reduction_pct:
        return Status.PASS, None
    if high < du.min_loss_reduction_pct:
        return Status.FAIL, (
            f"Mode 2 (no depth utility): {said}, below the {du.min_loss_reduction_pct:g} % reduction asked for: the "
            "trained deep blocks do not beat the same blocks left at random initialisation"
        )
    return Status.NOT_ASSESSED, (
        f"functional part borderline: {said} straddles {du.min_loss_reduction_pct:g} %: this eval set cannot tell "
        "whether the deep blocks beat their random initialisation by the margin (more eval samples would)"
    )


def _interval_phrase(
    margin: float, low: float, high: float, baseline: BaselineInfo, confidence: float, samples: int
) -> str:
    if baseline.margin_se_pp is None:
        return f"{margin:+.2f} pp"
    how = "paired" if baseline.paired else "unpaired"
    return f"{margin:+.2f} pp ({100 * confidence:g} % interval {low:+.2f} … {high:+.2f} pp, {how}, {samples} samples)"


def depth_utility(m: Measurements, t: Thresholds, baseline: BaselineInfo | None) -> CheckResult:
    du = t.depth_utility
    thresholds = {
        "min_margin_pp": du.min_margin_pp, "min_loss_reduction_pct": du.min_loss_reduction_pct,
        "margin_confidence": du.margin_confidence,
        "min_credit_reach": du.min_credit_reach, "null_z": du.null_z, "first_deep_layer": du.first_deep_layer,
    }  # fmt: skip
    values: dict[str, object] = {m.metric: m.accuracy, "baseline_accuracy": None}
    failures: list[str] = []
    unassessed: list[str] = []
    notes: list[str] = []
    if baseline is None:
        functional = Status.NOT_ASSESSED
        unassessed.append(
            "functional part not assessed: no frozen-blocks baseline (pass --baseline CKPT or --baseline-accuracy)"
        )
    else:
        notes.append(_baseline_note(baseline))
        functional, said = _margin(m, t, baseline, values)
        if said is not None:
            (failures if functional is Status.FAIL else unassessed).append(said)
    reach_status, reach_values, reach_messages, reach_notes = _credit_reach(m, t)
    values.update(reach_values)
    notes.extend(reach_notes)
    notes.extend(_rank_notes(m, du.min_rank_ratio))
    (unassessed if reach_status is Status.NOT_ASSESSED else failures).extend(reach_messages)
    values["functional"], values["credit_reach_status"] = functional.value, reach_status.value
    parts = {functional, reach_status}
    status = (
        Status.FAIL if Status.FAIL in parts else Status.NOT_ASSESSED if Status.NOT_ASSESSED in parts else Status.PASS
    )
    values["mode"] = MODE_2 if status is Status.FAIL else None
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


def _plus_minus(se: float | None) -> str:
    return "" if se is None else f" ± {se:.2g}"
