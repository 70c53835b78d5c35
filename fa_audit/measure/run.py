"""One streamed pass over the eval data: a forward and a backward per batch give every
h_l and g_l; the method's credit (persisted feedback and K null draws, batched) is
reduced on the spot, so nothing of size [N, width] is kept."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch

from model_adapters import AdaptedModel
from model_adapters.base import InputShapeError, UserForwardError

from ..adapt import batch_refused
from ..config import Thresholds
from ..conventions import HOW_TO_SAVE
from ..errors import InputError
from ..escape import printable
from ..loss_heads import LossHead
from ..loss_heads.cross_entropy import CROSS_ENTROPY
from ..methods import Batch, CreditMethod, Feedback, Forward, backward_start
from ..report import INTERVAL_CONFIDENCE, Aggregate, LayerStats, Measurements, deep_mean
from .accumulate import AggregationSums, CosineSums, LayerAccumulator, Magnitudes, SampleTable
from .diagnostics import PROBE_SAMPLES, RANK_SAMPLES, Diagnostics, batch_diagnostics, injectors
from .float64_model import drop_casts, in_float64
from .functional import Tensor, as_float64, reciprocals, row_cosines, row_norms, state_norms
from .loss_head import rows_times
from .null_closed import ClosedNull, add_rows, closes
from .null_sample import NullSample
from .null_settle import KeptNull, settle
from .pages import PASS_LEAST, Pages, float64, reusing
from .ranks import ALONE, Ranks, raise_first
from .reference_check import (
    SAMPLES,
    Recomputed,
    ReferenceProof,
    cannot_run,
    prove_reference,
    refuse,
    replaced_backward,
    worst,
)
from .spot_rows import SpotRows


@dataclass(frozen=True)
class FeedbackSet:
    """Persisted feedback, completed with NaN matrices for the ``missing`` keys."""

    tensors: dict[str, Tensor]
    missing: frozenset[str]


def forward_backward(
    model: AdaptedModel, x: Tensor, y: Tensor, head: LossHead = CROSS_ENTROPY
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Float64 logits, hidden states and g_l = d(sum_i loss_i)/d(h_l) (float64), all detached."""
    passed = bp_pass(model, x, y, nullcontext(), head=head)
    return passed.logits, passed.hidden, [rows_times(g, passed.scale) for g in passed.grads]


class BackwardPass(NamedTuple):
    logits: Tensor
    """Float64, detached."""
    hidden: list[Tensor]
    grads: list[Tensor]
    """ĝ_l = g_l / s per sample, float64: the gradient of the unit-row error (see :mod:`.loss_head`)."""
    error: Tensor
    """ê, the unit-row output error (:func:`.loss_head.output_error`)."""
    scale: Tensor
    """s per sample: e = s · ê and g_l = s · ĝ_l."""
    forward: Forward | None
    input_grad: Tensor | None = None
    """∂⟨z, ê⟩/∂x, with ``with_input`` and a floating-point x."""
    projected: Tensor | None = None
    """∂⟨z, ê⟩ at the model's error point (float64), where it has one."""
    perplexity: tuple[Tensor, Tensor] | None = None
    """The head's :meth:`~fa_audit.loss_heads.LossHead.perplexity_terms`, formed with the error."""


def bp_pass(
    model: AdaptedModel,
    x: Tensor,
    y: Tensor,
    instrument: AbstractContextManager[Any],
    with_input: bool = False,
    head: LossHead = CROSS_ENTROPY,
) -> BackwardPass:
    """The forward and the backward from the loss, in unit-error space; with ``instrument``
    around the forward; when it gives a switch, the graph is kept for the credit's walks and
    returned as a :class:`Forward`.

    The loss head is float64 (pitfall 3, docs/pitfalls.md), exact at any saturation, and the
    backward starts from each sample's error direction ê (entries of order 1), so that no row of
    ĝ_l is zeroed by float32 underflow (:mod:`.loss_head`). The model, and so the backward
    pass below the logits, stays in its own dtype.
    """
    with torch.enable_grad(), instrument as switch:
        # x in the graph: a model whose every parameter is frozen still has h_l in it.
        x_in = x.detach().requires_grad_(x.is_floating_point())  # token ids: h_l is in the graph by the weights
        logits, hidden, point = model.forward_with_point(x_in)
        logits64 = float64(logits)
        error, scale, perplexity = head.error_and_perplexity(logits64, y)
        _check_in_graph(model, x, hidden)
        wrt = [*hidden, *([] if point is None else [point]), *([x_in] if with_input else [])]
        found = torch.autograd.grad(backward_start(logits, error), wrt, retain_graph=switch is not None,
                                    allow_unused=True)  # fmt: skip
        input_grad = found[-1] if with_input else None
        projected = None if point is None else found[len(hidden)]
        if point is not None and projected is None:
            refuse(f"the logits do not depend on the output of {printable(model.error_point or '')}, where the "
                   "method takes its error", replaced_backward(model, x))  # fmt: skip
        found = found[: len(hidden)]
        if any(g is None for g in found):
            _check_in_graph(model, x, hidden, [g is None for g in found])
    grads = [float64(g) for g in found if g is not None]
    kept = None if switch is None else Forward(logits, hidden, switch)
    return BackwardPass(
        logits64, [h.detach() for h in hidden], grads, error, scale, kept, input_grad,
        None if projected is None else projected.double(), perplexity,
    )  # fmt: skip


def _check_in_graph(model: AdaptedModel, x: Tensor, hidden: list[Tensor], unused: list[bool] | None = None) -> None:
    """Every h_l must carry a gradient from the loss: refused with the modules that cut the
    graph when one is detached (no history) or ``unused`` (the loss does not reach it)."""
    cut = [i for i, h in enumerate(hidden) if not h.requires_grad or (unused is not None and unused[i])]
    if not cut:
        return
    at = ", ".join(f"h{i} ({printable(model.hidden_modules[i])})" for i in cut)
    why = "it is detached from the graph" if unused is None else "the logits do not depend on it"
    refuse(f"the loss has no gradient at {at} ({why}; --hidden must name modules the model's output flows through)",
           replaced_backward(model, x))  # fmt: skip


def finite_norms(
    logits: Tensor, hidden: list[Tensor], targets: list[Tensor], first_sample: int, source: object
) -> tuple[Tensor, Tensor]:
    """Row norms of every h_l and g_l (flattened, float64), [L, n] each. Inputs that overflow the
    float32 forward or backward pass cannot be audited, and a float32 row's norm cannot
    overflow in float64, so a non-finite norm is exactly a row holding a NaN or an Inf:
    the norms the audit needs anyway are its finiteness check."""
    h_norms, g_norms = state_norms(hidden), torch.stack([row_norms(g) for g in targets])
    logit_norms = row_norms(logits)
    if bool(torch.isfinite(torch.cat([logit_norms, h_norms.flatten(), g_norms.flatten()])).all()):  # one check
        return h_norms, g_norms
    named = [("the logits", logit_norms)] + [(f"h{i}", n) for i, n in enumerate(h_norms)]
    for what, norms in named + [(f"the gradient at h{i}", n) for i, n in enumerate(g_norms)]:
        if not torch.isfinite(norms).all():
            raise InputError(
                f"{what} is not finite in float32 for the batch starting at sample {first_sample}: "
                "these inputs overflow the model",
                None if source is None else str(source),
            )
    return h_norms, g_norms


FP64_ROWS = 16
"""Rows of the first batch recomputed in float64, twice over: this many spread evenly over
it, and this many of the most confident among the rest."""


def fp64_rows(logits64: Tensor, y: Tensor, head: LossHead = CROSS_ENTROPY) -> tuple[Tensor, int]:
    """The first batch's rows the float64 agreement recomputes: FP64_ROWS spread evenly
    (their mean estimates the batch's), then the FP64_ROWS most confident of the others
    (smallest 1 - p_max: the smallest errors, whose gradient float32's rounding corrupts
    first, where the minimum looks). Returns the rows and how many are spread."""
    n = logits64.shape[0]
    if n <= 2 * FP64_ROWS:
        return torch.arange(n, device=logits64.device), n
    spread = torch.arange(FP64_ROWS, device=logits64.device) * n // FP64_ROWS
    doubt = head.doubt(logits64, y).clone()
    doubt[spread] = float("inf")
    return torch.cat([spread, doubt.argsort()[:FP64_ROWS]]), FP64_ROWS


RowCosines = tuple[Tensor, Tensor]
"""One layer's row cosines between the float32 gradients and a float64 recomputation: on
the rows its mean is over (spread evenly, or drawn at random), and on every row checked."""


class Float64Check(NamedTuple):
    """:func:`float64_check`'s findings on a set of rows."""

    cosines: list[Tensor]
    """Each layer's row cosines between the audit's float32 gradients and float64's."""
    proof: ReferenceProof
    alone: list[Tensor] | None
    """Where a row agrees below the threshold: the same, for the rows' float32 gradients
    recomputed as one batch of their own. Float32 that rounds these rows off float64 (a stream
    of norm 1e9) does so alone too; a backward that depends on the batch does not."""


def float64_check(
    model: AdaptedModel,
    model64: AdaptedModel,
    x: Tensor,
    y: Tensor,
    grads32: list[Tensor],
    chance: torch.Generator,
    head: LossHead,
    threshold: float,
    inject_at: list[Any] | None = None,
) -> Float64Check:
    """The float32 gradients ``grads32`` of the rows (x, y), as the audit computed them in its
    own batches, against one float64 forward and backward of those rows as a batch (``model64``,
    :func:`in_float64` of ``model``): each layer's row cosines, the reference proof of the float64
    gradients on SAMPLES of the rows drawn by ``chance`` (:func:`~.reference_check.check_reference`),
    and where a row agrees below ``threshold``, the agreement of the rows recomputed in float32
    alone; ``inject_at``, the :func:`~.diagnostics.injectors` of ``model64`` when the caller has them."""
    x64 = as_float64(x)
    try:
        passed = bp_pass(model64, x64, y, nullcontext(), with_input=x64.is_floating_point(), head=head)
    except (RuntimeError, UserForwardError) as exc:
        cannot_run(model64, x64, exc)
    cosines = [row_cosines(g32.flatten(1), g64.flatten(1)) for g32, g64 in zip(grads32, passed.grads, strict=True)]
    rows = torch.randperm(len(y), generator=chance)[:SAMPLES].to(y.device)
    picked = Recomputed(
        passed.logits[rows], [h[rows] for h in passed.hidden], [g[rows] for g in passed.grads], passed.error[rows],
        None if passed.input_grad is None else passed.input_grad[rows].double(),
    )  # fmt: skip
    inject_at = inject_at if inject_at is not None else injectors(model64, x64[:PROBE_SAMPLES])
    proof = prove_reference(model64, x64[rows], picked, chance, inject_at)
    if not any(bool((c < threshold).any()) for c in cosines):
        return Float64Check(cosines, proof, None)
    alone = bp_pass(model, x, y, nullcontext(), head=head).grads
    agreeing = [row_cosines(a.flatten(1), b.flatten(1)) for a, b in zip(alone, passed.grads, strict=True)]
    return Float64Check(cosines, proof, agreeing)


def fp64_agreement(
    model: AdaptedModel,
    model64: AdaptedModel,
    x: Tensor,
    y: Tensor,
    logits64: Tensor,
    grads32: list[Tensor],
    chance: torch.Generator,
    head: LossHead,
    threshold: float,
    inject_at: list[Any] | None = None,
) -> tuple[list[RowCosines], ReferenceProof, list[RowCosines] | None]:
    """:func:`float64_check` on the first batch's :func:`fp64_rows` (float64 convolutions have no
    fast CPU kernel: a ResNet-18's first batch of 256 took 5× its whole float32 pass)."""
    rows, spread = fp64_rows(logits64, y, head)
    found = float64_check(model, model64, x[rows], y[rows], [g[rows] for g in grads32], chance, head, threshold,
                          inject_at)  # fmt: skip
    alone = None if found.alone is None else [(cos[:spread], cos) for cos in found.alone]
    return [(cos[:spread], cos) for cos in found.cosines], found.proof, alone


def agreement(cosines: RowCosines) -> tuple[float, float] | None:
    """(mean, minimum) of a layer's row cosines: the mean, cos's own statistic, over the rows
    meant for it; the minimum over every row (a median would hide a tail of broken samples)."""
    typical, every = (part.cpu() for part in cosines)
    typical, every = typical[~typical.isnan()], every[~every.isnan()]
    return (float(typical.mean()), float(every.min())) if typical.numel() else None


def refusal_reason(method: CreditMethod, model: AdaptedModel, layer: int, missing: frozenset[str]) -> str:
    if not method.defines_cosine:
        return f"cosine is not defined for method {method.name!r}"
    keys = method.layer_keys(model, layer)
    named = sorted(missing if keys is None else keys & missing) or sorted(missing)
    reason = f"feedback missing for {', '.join(named)} (no fallback to the BP gradient)"
    # TinyDFA never puts its matrix in the state dict: the hint only where no hidden state's was found
    if method.feedback_kind == "hidden" and missing >= set(model.hidden_modules):
        reason += f"; with TinyDFA, {HOW_TO_SAVE} --convention tinydfa"
    return reason


@dataclass
class _FirstBatch:
    """What the first batch alone settles: the per-layer accumulators (with the refused
    layers marked), the reference proof, the float64 agreement and the diagnostics."""

    layers: list[LayerAccumulator]
    agg: AggregationSums
    table: SampleTable
    widths: list[int]
    """Each h_l's flattened width."""
    proof: ReferenceProof | None
    fp64: list[RowCosines]
    fp64_alone: list[RowCosines] | None
    """Where a row of the first batch agrees below the threshold: the same rows' float32 gradients
    recomputed as a batch of their own, against float64."""
    diagnostics: list[Diagnostics]


def _first_sums(
    model: AdaptedModel,
    method: CreditMethod,
    credit: list[tuple[Tensor, Tensor] | None],
    feedback: FeedbackSet,
    thresholds: Thresholds,
    expected_samples: int,
    widths: list[int],
    signal: Tensor | None,
    first_sample: int,
) -> _FirstBatch:
    """The per-layer accumulators, with the layers the first batch's credit refuses marked and
    the null in closed form where the method's ``signal`` (:meth:`CreditMethod.null_signal`) allows."""
    dir_batch = thresholds.reference_validity.direction_stability_batch
    draws = thresholds.null_calibration.draws
    layers = [LayerAccumulator(dir_batch, draws, first_sample // dir_batch) for _ in credit]
    for i, terms in enumerate(credit):
        if terms is None or any(t.isnan().any() for t in terms):
            layers[i].refused = refusal_reason(method, model, i, feedback.missing)
        elif method.independent_null:
            layers[i].independent_width = widths[i]
        elif signal is not None and closes(widths[i], signal.shape[1]):
            layers[i].closed = ClosedNull(widths[i])
    agg = AggregationSums(sum(acc.refused is None for acc in layers))
    return _FirstBatch(layers, agg, SampleTable(len(layers), expected_samples), widths, None, [], None, [])


def _float64_work(
    model: AdaptedModel,
    model64: AdaptedModel,
    method: CreditMethod,
    batch: Batch,
    logits: Tensor,
    persisted: dict[str, Tensor],
    seed: int,
    first: _FirstBatch,
    thresholds: Thresholds,
    chance: torch.Generator,
    head: LossHead,
    credits: list[Tensor | None] | None,
) -> _FirstBatch:
    """The first batch's float64 work, on the rank that holds sample 0: the reference proof
    on rows drawn by ``chance`` (no number resting on g_l is reported unless it holds), the
    float64 agreement and the diagnostics (on ``credits`` where the pass kept them), with ``model64``,
    :func:`in_float64` of ``model``."""
    x, y = batch.x, batch.y
    inject_at = injectors(model64, as_float64(x[:PROBE_SAMPLES]))  # found once: the proof and the diagnostics
    fp64, proof, alone = fp64_agreement(
        model, model64, x, y, logits, batch.grads, chance, head, thresholds.reference_validity.min_fp64_agreement,
        inject_at,
    )  # fmt: skip
    refused = [acc.refused is not None for acc in first.layers]
    diagnostics = batch_diagnostics(
        model, model64, method, batch, persisted, refused, seed, inject_at, thresholds.perturbation.nudges,
        thresholds.perturbation.max_se,
        head, credits,
    )  # fmt: skip
    return replace(first, proof=proof, fp64=fp64, fp64_alone=alone, diagnostics=diagnostics)


def _spot_work(
    model: AdaptedModel, model64: AdaptedModel, spot: SpotRows, head: LossHead, threshold: float
) -> Float64Check:
    """:func:`float64_check` on the kept rows, whose float32 gradients the audit computed in its own batches."""
    assert spot.x is not None and spot.y is not None
    return float64_check(model, model64, spot.x, spot.y, spot.grads, spot.generator, head, threshold)


@dataclass
class _Pass:
    """One rank's share of the pass: its running sums (the first batch's work on the
    rank that holds sample 0), and whether its null samples were kept for more draws."""

    first: _FirstBatch | None
    samples: int = 0
    saturated: float = 0.0
    kept: bool = True
    labels: Tensor | None = None
    """How many of this rank's samples carry each label."""
    hits: list[Tensor] = field(default_factory=list)
    """Per sample, whether the model's top class is the label (for depth utility's paired margin)."""
    target_sums: Tensor | None = None
    """The head's sums of this rank's targets (its best constant output's loss)."""
    token_loss: float = 0.0
    tokens: int = 0
    spot: Float64Check | None = None


def measure(
    model: AdaptedModel,
    method: CreditMethod,
    feedback: FeedbackSet,
    batches: Iterable[tuple[Tensor, Tensor]],
    thresholds: Thresholds,
    *,
    device: torch.device,
    seed: int,
    checkpoint_dtype: str,
    expected_samples: int = 0,
    first_sample: int = 0,
    ranks: Ranks = ALONE,
    source: object = None,
    on_batch: Callable[[int], None] | None = None,
    head: LossHead = CROSS_ENTROPY,
) -> Measurements:
    """``expected_samples`` is the size of the whole eval set, of which ``batches`` start at
    sample ``first_sample`` (this rank's shard, with ``ranks``); ``source`` names the eval
    data in error messages; ``head`` is the loss the gradients and the metric come from."""
    calibration = thresholds.null_calibration
    generator = torch.Generator().manual_seed(seed)
    persisted = {k: v.to(device).unsqueeze(0) for k, v in feedback.tensors.items()}

    def null_feedback(draws: int) -> Feedback:
        present = {k: v[0] for k, v in persisted.items() if k not in feedback.missing}
        fixed = {k: persisted[k][0] for k in feedback.missing}
        return method.draw_null_feedback(present, draws, generator, fixed)

    kept = KeptNull()
    pass_draws = functools.cache(lambda: null_feedback(calibration.draws))  # none where every layer is closed

    def one_pass() -> _Pass:
        return _local_pass(model, method, feedback, batches, thresholds, persisted, pass_draws,
                           generator, kept, device, seed, expected_samples, first_sample, source, on_batch,
                           head)  # fmt: skip

    passed = _gathered(ranks, one_pass)
    first = _merged_first([p.first for p in passed if p.first is not None])
    samples, saturated = (sum(getattr(p, k) for p in passed) for k in ("samples", "saturated"))
    hits = torch.cat([h for p in passed for h in p.hits]) if samples else torch.zeros(0, dtype=torch.bool)
    labels = [p.labels for p in passed if p.labels is not None]
    counts = torch.stack(labels).sum(0) if labels else None
    majority = float(counts.max()) / float(counts.sum()) if counts is not None and counts.sum() else 0.0

    def measure_draws(draws: int, wanted: frozenset[int]) -> list[Tensor | None]:
        """``draws`` fresh null draws over every rank's kept null samples: the ``wanted`` layers'
        means. Every matrix is drawn, so that each draw is the one a run measuring every layer
        makes; the method is told which layers' terms are read (:attr:`Batch.layers`)."""
        layers = enumerate(first.layers)
        sums = [None if acc.refused or i not in wanted else CosineSums.empty(draws) for i, acc in layers]
        fresh = null_feedback(draws)
        for chunk in kept.chunks or []:
            _draw_null(sums, method, model, replace(chunk, layers=wanted), fresh, generator)
        merged = [None if s[0] is None else CosineSums.merged(s) for s in zip(*ranks.gather(sums), strict=True)]
        return [None if s is None else s.means() for s in merged]

    if all(p.kept for p in passed) and any(p.samples for p in passed):
        limit = calibration.max_walk_draws if method.walks_per_draw else calibration.max_draws
        settle(first.layers, thresholds.depth_utility.null_z, limit, calibration.draws, measure_draws)
    spots = [p.spot for p in passed if p.spot is not None]
    summary = _summarise(model, first, spots, hits, saturated, checkpoint_dtype)
    constant, perplexity = _head_summary(passed, head, samples)
    return replace(summary, majority_fraction=majority, loss_head=head.name, metric=head.metric,
                   constant_loss=constant, perplexity=perplexity)  # fmt: skip


def _add_head_sums(done: _Pass, head: LossHead, y: Tensor, terms: tuple[Tensor, Tensor] | None) -> None:
    """What the head's constant output and the perplexity (``terms``) are formed from, one batch's worth."""
    sums = head.target_sums(y)
    if sums is not None:
        done.target_sums = sums.cpu() if done.target_sums is None else done.target_sums + sums.cpu()
    if terms is not None:
        done.token_loss += float(terms[0].sum())
        done.tokens += int(terms[1].sum())


def _head_summary(passed: list[_Pass], head: LossHead, samples: int) -> tuple[float | None, float | None]:
    """The best constant output's loss and the perplexity, over every rank's samples."""
    sums = [p.target_sums for p in passed if p.target_sums is not None]
    tokens, token_loss = sum(p.tokens for p in passed), sum(p.token_loss for p in passed)
    constant = head.constant_loss(torch.stack(sums).sum(0), samples) if sums and samples else None
    return constant, math.exp(token_loss / tokens) if tokens else None


def _gathered(ranks: Ranks, one_pass: Callable[[], _Pass]) -> list[_Pass]:
    """Every rank's pass, on every rank. An error on any rank is raised on all (the lowest
    rank's), so that none waits forever for the others and all end with its exit code."""
    if ranks.world == 1:
        return [one_pass()]
    try:
        result: tuple[_Pass | None, BaseException | None] = (one_pass(), None)
    except Exception as exc:
        result = (None, exc)
    gathered = ranks.gather(result)
    raise_first([error for _, error in gathered])
    return [p for p, _ in gathered if p is not None]


def _merged_first(parts: list[_FirstBatch]) -> _FirstBatch:
    """The ranks' sums as one; the float64 work is the first rank's, which holds sample 0."""
    if len(parts) <= 1:
        return parts[0] if parts else _FirstBatch([], AggregationSums(0), SampleTable(0, 0), [], None, [], None, [])
    layers = [LayerAccumulator.merged(list(layer)) for layer in zip(*(p.layers for p in parts), strict=True)]
    agg, table = AggregationSums.merged([p.agg for p in parts]), SampleTable.merged([p.table for p in parts])
    return replace(parts[0], layers=layers, agg=agg, table=table)


def _local_pass(
    model: AdaptedModel,
    method: CreditMethod,
    feedback: FeedbackSet,
    batches: Iterable[tuple[Tensor, Tensor]],
    thresholds: Thresholds,
    persisted: dict[str, Tensor],
    null_fb: Callable[[], Feedback],
    generator: torch.Generator,
    kept: KeptNull,
    device: torch.device,
    seed: int,
    expected_samples: int,
    first_sample: int,
    source: object,
    on_batch: Callable[[int], None] | None,
    head: LossHead,
) -> _Pass:
    """The streamed pass over this rank's batches, the null's K draws on its null samples."""
    null_sample = NullSample(expected_samples, thresholds.null_calibration.samples_for(method.walks_per_draw))
    done = _Pass(first=None)
    spot = SpotRows()
    float64 = functools.cache(lambda: in_float64(model))  # built once for the first batch's and the spot rows' work
    position = first_sample
    # Each batch's largest float64 tensors on the pages of one before it; released with the loop, so that
    # the work after it (the spot rows, the null's rest) does not hold them.
    with reusing(Pages(PASS_LEAST)):
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            try:
                passed = bp_pass(model, x, y, method.instrument(model), head=head)
            except InputShapeError as exc:  # the probe's one sample went through; a whole batch need not (--batch-dim)
                raise batch_refused(model, exc, len(y), position, source) from None
            logits, hidden, grads, error, scale, forward = passed[:6]
            perplexity = passed.perplexity
            targets = [g.flatten(1) for g in grads]
            h_norms, g_norms = finite_norms(logits, hidden, targets, position, source)
            del hidden  # its norms are all the audit reads of it
            with torch.no_grad():  # not inference_mode: FA's credit walks a graph backward
                batch = Batch(x=x, y=y, error=error, grads=grads, scale=scale, projected=passed.projected)
                del passed
                # FA's credit walks the BP pass's graph; its last walk frees it.
                walked, kept_credit = replace(batch, forward=forward), None
                if position == 0:
                    credit, kept_credit = method.first_terms(model, walked, persisted, generator, targets, RANK_SAMPLES)
                else:
                    credit = method.alignment_terms(model, walked, persisted, generator, targets)
                del forward, walked
                signal = method.null_signal(batch)  # what a closed-form null sums, formed once a batch
            if done.first is None:
                widths = [t.shape[1] for t in targets]
                done.first = _first_sums(
                    model, method, credit, feedback, thresholds, expected_samples, widths, signal, first_sample
                )
            first = done.first
            with torch.inference_mode():
                magnitudes = Magnitudes(scale, row_norms(error), method.credit_scales_with_error)
                _accumulate(first, h_norms, g_norms, magnitudes, targets, credit)
                _accumulate_closed(first.layers, signal, targets, g_norms)
                done.hits.append(head.scores(logits, y).cpu())
                counted = head.label_counts(y, logits.shape[-1])
                if counted is not None:
                    done.labels = counted if done.labels is None else done.labels + counted
                done.saturated += head.saturated(logits, y)
                _add_head_sums(done, head, y, perplexity)
            spot.add(x, y, grads)  # outside inference mode: its rows go through a backward again
            del targets  # before the float64 work, which holds a float64 model and its own graphs
            if position == 0:
                with torch.no_grad():
                    done.first = first = _float64_work(
                        model, float64(), method, batch, logits, persisted, seed, first, thresholds, spot.generator,
                        head, kept_credit,
                    )  # fmt: skip
                    del kept_credit
                    drop_casts(float64())
            if _drawn(first.layers):
                for chunk in null_sample.add(batch, position):
                    _draw_into(first.layers, method, model, chunk, null_fb, generator)
                    kept.keep(chunk)
            position += len(y)
            done.samples += len(y)
            if on_batch is not None:
                on_batch(len(y))
            # Else this batch's states, gradients and their float64 copies live on through the
            # next batch's pass (BioTorch's LeNet: 0.16 GB of a 0.7 GB peak).
            del grads, batch, error, credit, h_norms, g_norms, signal
    if spot.x is not None:
        with torch.no_grad():
            done.spot = _spot_work(model, float64(), spot, head, thresholds.reference_validity.min_fp64_agreement)
    if done.first is not None and _drawn(done.first.layers):
        for chunk in null_sample.rest():
            _draw_into(done.first.layers, method, model, chunk, null_fb, generator)
            kept.keep(chunk)
    done.kept = kept.chunks is not None
    for acc in [] if done.first is None else done.first.layers:
        if acc.closed is not None:
            acc.closed.to_cpu()
    return done


def _accumulate(
    first: _FirstBatch,
    h_norms: Tensor,
    g_norms: Tensor,
    magnitudes: Magnitudes,
    targets: list[Tensor],
    credit: list[tuple[Tensor, Tensor] | None],
) -> None:
    """Fold one batch's [L, n] norms and alignment terms (unit-error space) into the running
    sums, every layer at once where the layers' numbers are rows of one tensor; the
    magnitude-weighted aggregations get them at their true scale."""
    first.table.add(h_norms, g_norms, magnitudes)
    for acc, g, inverse in zip(first.layers, targets, reciprocals(g_norms).unbind(), strict=True):
        acc.direction.update(g, inverse)
    kept = [i for i, acc in enumerate(first.layers) if acc.refused is None and credit[i] is not None]
    if not kept:
        return
    terms = [t for i in kept for t in credit[i] or ()]
    dot, cc = torch.cat(terms[0::2]), torch.cat(terms[1::2])  # [L', n]: each layer's one draw
    gg = g_norms.square() if len(kept) == len(first.layers) else g_norms[kept].square()
    CosineSums.add_each([first.layers[i].cos for i in kept], dot, cc, gg)
    first.agg.add_batch(*magnitudes.true_terms(dot, cc, gg), deep=sum(i >= 1 for i in kept))


def _drawn(layers: list[LayerAccumulator]) -> list[int]:
    """The layers whose null is drawn: not refused, not in closed form, not exact."""
    return [
        i
        for i, acc in enumerate(layers)
        if acc.refused is None and acc.closed is None and acc.independent_width is None
    ]


def _accumulate_closed(
    layers: list[LayerAccumulator], signal: Tensor | None, targets: list[Tensor], g_norms: Tensor
) -> None:
    """One batch's rows into the layers whose null is in closed form: every row Γ is the mean of."""
    closed = [(i, acc.closed) for i, acc in enumerate(layers) if acc.closed is not None]
    if not closed:
        return
    assert signal is not None, "a closed-form null without the method's signal"
    which = [i for i, _ in closed]
    add_rows([null for _, null in closed], signal, [targets[i] for i in which], g_norms[which])


def _draw_into(
    layers: list[LayerAccumulator],
    method: CreditMethod,
    model: AdaptedModel,
    chunk: Batch,
    null_fb: Callable[[], Feedback],
    generator: torch.Generator,
) -> None:
    """One chunk of the null's samples: the K draws' alignment terms (``null_fb()``, drawn when
    first asked for) of the layers whose null is drawn."""
    drawn = _drawn(layers)
    sums: list[CosineSums | None] = [acc.null if i in drawn else None for i, acc in enumerate(layers)]
    _draw_null(sums, method, model, replace(chunk, layers=frozenset(drawn)), null_fb(), generator)


def _draw_null(
    sums: list[CosineSums | None],
    method: CreditMethod,
    model: AdaptedModel,
    chunk: Batch,
    null_fb: Mapping[str, Tensor],
    generator: torch.Generator,
) -> None:
    """The K null draws' alignment terms on one chunk of the null's samples, into ``sums``
    (None for a layer not drawn)."""
    with torch.no_grad():
        targets = [g.flatten(1).double() for g in chunk.grads]
        null = method.alignment_terms(model, chunk, null_fb, generator, targets)
    with torch.inference_mode():
        for sink, terms, g in zip(sums, null, targets, strict=True):
            if sink is not None and terms is not None:
                sink.add(*terms, row_norms(g) ** 2)


def _summarise(
    model: AdaptedModel,
    first: _FirstBatch,
    spots: list[Float64Check],
    hits: Tensor,
    saturated: float,
    checkpoint_dtype: str,
) -> Measurements:
    """The layers' statistics; the float64 agreement and the proof over the first batch's rows
    and every rank's spot rows."""
    samples = len(hits)
    diagnostics, agg = first.diagnostics, first.agg
    proofs = [p for p in [first.proof, *(s.proof for s in spots)] if p is not None]
    stats = []
    medians, intervals = first.table.medians(), first.table.intervals()
    for i, (acc, (h_norm, growth, g_norm, g_rel)) in enumerate(zip(first.layers, medians, strict=True)):
        h_interval, growth_interval, g_interval, rel_interval = intervals[i]
        cos, null_mean, null_std, z, null_draws, null_std_range, null_std_sample = acc.cosine_summary()
        agree, agree_min = (agreement(first.fp64[i]) if first.fp64 else None) or (None, None)
        agree_alone = (agreement(first.fp64_alone[i]) or (None, None))[0] if first.fp64_alone else None
        spot = _spot_mean([s.cosines[i] for s in spots])
        # a rank with no row below the threshold did not recompute: its rows count as they agreed, so that
        # the two means are over the same rows
        recomputed = any(s.alone is not None for s in spots)
        alone = _spot_mean([s.cosines[i] if s.alone is None else s.alone[i] for s in spots]) if recomputed else None
        stats.append(
            LayerStats(
                name=f"h{i}",
                module=model.hidden_modules[i],
                width=first.widths[i],
                h_norm=h_norm,
                growth=growth,
                g_norm=g_norm,
                g_rel=g_rel,
                h_norm_interval=h_interval,
                growth_interval=growth_interval,
                g_norm_interval=g_interval,
                g_rel_interval=rel_interval,
                cos=cos,
                cos_se=acc.cos_se(),
                null_mean=null_mean,
                null_std=null_std,
                z=z,
                null_draws=null_draws,
                null_std_range=null_std_range,
                null_std_sample=null_std_sample,
                dir_stab=acc.direction.result(),
                dir_stab_se=acc.direction.standard_error(),
                dir_stab_interval=acc.direction.interval(INTERVAL_CONFIDENCE),
                fp64_agree=agree,
                fp64_agree_min=agree_min,
                fp64_agree_alone=agree_alone,
                fp64_agree_spot=spot,
                fp64_agree_spot_alone=alone,
                grad_check=worst([p.layers[i] for p in proofs]).error,
                refused=acc.refused,
                zero_norm_rows=acc.cos.excluded,
                **diagnostics[i],
            )
        )
    cosines = [s.cos for s in stats]
    headline = (
        None if any(c is None for c in cosines) else math.fsum(c for c in cosines if c is not None) / len(cosines)
    )
    strategies = agg.strategies(headline) if headline is not None else {}
    return Measurements(
        layers=stats,
        accuracy=int(hits.sum()) / samples if hits.dtype == torch.bool else float(hits.double().mean()),
        metric_se=_standard_error(hits),
        hits=hits,
        samples=samples,
        saturated_fraction=saturated / samples,
        aggregate=Aggregate(
            headline, strategies, *((agg.headline_se(), *_deep(agg, stats)) if headline is not None else ())
        ),
        checkpoint_dtype=checkpoint_dtype,
        input_grad_check=worst([p.through_input for p in proofs]).error,
    )


def _deep(agg: AggregationSums, stats: list[LayerStats]) -> tuple[float | None, float | None]:
    """Deep Γ and its standard error (none where a deep layer has no Γ)."""
    deep = deep_mean([layer.cos for layer in stats])
    return (None, None) if deep is None else (deep, agg.deep_se())


def _standard_error(scores: Tensor) -> float | None:
    """The per-sample scores' mean's standard error (n − 1 in the deviation); None below two samples
    or where a score is not a number (a sequence with no target token)."""
    if len(scores) < 2:
        return None
    se = float(scores.double().std() / math.sqrt(len(scores)))
    return se if math.isfinite(se) else None


def _spot_mean(cosines: list[Tensor]) -> float | None:
    """The mean of every rank's spot-row cosines (None without one)."""
    every = torch.cat([c.cpu() for c in cosines]) if cosines else torch.zeros(0)
    every = every[~every.isnan()]
    return float(every.mean()) if every.numel() else None


def complete_feedback(given: Mapping[str, Tensor], shapes: Mapping[str, tuple[int, ...]]) -> FeedbackSet:
    """Fill each missing key with NaN so that exactly the layers that need it come out NaN."""
    missing = frozenset(k for k in shapes if k not in given)
    tensors = {k: given[k].float() if k in given else torch.full(shape, float("nan")) for k, shape in shapes.items()}
    return FeedbackSet(tensors=tensors, missing=missing)
