"""Diagnostics that triangulate the cosine, measured once on the first eval batch (capped
samples, so their cost stays small beside the audit's):

- perturbation correlation ρ (only when ``perturbation.nudges`` > 0): does the credit
  predict how the loss actually moves when h_l is nudged? Over M random nudges δ_j, each of
  one sample's h_l, the Pearson correlation of <c_l, δ_j> with that sample's
  L(h_l + δ_j) - L(h_l) (float64, the exact per-sample loss), with the BP gradient as the
  positive control (≈ 1) and an independent random vector as the negative control (≈ 0);
  its standard error (a jackknife over the nudged samples) is reported with it, and a ρ
  whose error is above ``perturbation.max_se`` is not reported at all;
- effective rank (Roy & Vetterli) of the credit matrix and of the BP-gradient matrix,
  and their ratio: a credit of much lower rank than the gradient has collapsed;
- for FA-family methods, the angle between W and B and the norm ratio ‖B‖/‖W‖ of the
  layers inside each hidden module (what BioTorch logs while training)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping, Set
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from model_adapters import AdaptedModel
from model_adapters.base import UserForwardError

from ..loss_heads import LossHead
from ..loss_heads.cross_entropy import CROSS_ENTROPY
from ..methods import Batch, CreditMethod
from ..report import INTERVAL_CONFIDENCE
from .functional import as_float64, jackknife_se, reciprocals
from .student_t import student_t

Tensor = torch.Tensor

RANK_SAMPLES = 256
PERTURB_SAMPLES = 256
"""The nudges are spread over this many samples of the first batch (each nudge moves one
sample's h_l: a nudge of every sample at once would cost a row per sample). The samples are
ρ's independent units (:func:`clustered_pearson`): over few of them, how much each sample's
credit happens to align would dominate its error."""
PROBE_SAMPLES = 4
"""The samples :func:`injectors` finds each h_l's way in on (three float64 forwards: few rows do)."""
NUDGE_ROWS = 256
"""Rows of one widened float64 forward: the nudges go through in blocks of this many."""
STEPS = (1e-3, 1e-5, 1e-7)
"""Each sample's nudge has the first of these norms relative to its ‖h_l‖ at which the loss
answers linearly (the positive control at least :data:`LINEAR`): a stream whose later blocks
amplify it (Mode 1 on its way) needs shorter steps than a healthy one."""
LINEAR = 0.99
"""The positive control's ρ from which the loss change counts as linear in the nudge: the
nonlinear rest attenuates every ρ of the layer by about this factor."""


RANK_GROUPS = 4
"""The effective ranks' jackknife groups: row r in group r mod 4. Each group left out is one more
eigenvalue problem of the rows kept (a wide layer's 256 rows: 8 groups, 224 × 224, 2.2 ms each; 4,
192 × 192, 1.5 ms), and on 100 sets of `bp.pt`'s rows four gave their spread as well as eight."""


Diagnostics = dict[str, Any]
"""One layer's diagnostics, by the names :class:`fa_audit.report.LayerStats` gives them."""


class EffectiveRank(NamedTuple):
    """An effective rank, and the same with each of :data:`RANK_GROUPS` groups of its rows left out."""

    value: float
    left_out: Tensor | None
    """[groups], float64 (row r in group r mod RANK_GROUPS); None where a group's leaving out has no
    rank or there are fewer than three groups."""

    @property
    def se(self) -> float | None:
        return None if self.left_out is None else jackknife_se(self.left_out)


def effective_rank(matrix: Tensor, row_scale: Tensor | None = None) -> EffectiveRank | None:
    """exp of the entropy of the normalised singular values (Roy & Vetterli, 2007) of ``matrix``
    with each row times its ``row_scale`` (float64), taken as the square roots of the
    eigenvalues of the smaller Gram matrix (a wide matrix's SVD costs several times more for
    the same values); with its rows left out a group at a time (:class:`EffectiveRank`)."""
    square = gram(matrix, row_scale)
    value = _rank_of_gram(square)
    if value is None:
        return None
    if matrix.shape[0] < 3:
        return EffectiveRank(value, None)
    if matrix.shape[0] <= matrix.shape[1]:  # the Gram matrix is a aᵀ: leaving rows out leaves its rows and columns out
        return EffectiveRank(value, _ranks_of_grams(_principal(square)))
    rows = matrix.double() if row_scale is None else matrix.double() * row_scale.view(-1, 1)  # tall: few columns
    return EffectiveRank(value, _ranks_of_grams(_left_out_grams(rows)))


def product_rank(rows: Tensor, matrix: Tensor, row_scale: Tensor) -> EffectiveRank | None:
    """:func:`effective_rank` of (rows · matrix) with each row times its ``row_scale``, from the
    factors [n, C] and [C, D] (DFA's credit e · B: a C × C problem, the classes' size, not the
    samples' or the width): with the rows' QR, the product's singular values are those of
    R · matrix. A group's leaving out takes its rowsᵀ rows from rowsᵀ rows, whose product
    with the square root P of matrix · matrixᵀ, P (rowsᵀ rows) P, has the same nonzero
    eigenvalues (where a factor is rank-deficient, the rounding its zero eigenvalues keep moves a rank
    by ~1e-7 of itself, far below the spread of the groups left out)."""
    scaled = rows.double() * row_scale.view(-1, 1)
    if not torch.isfinite(scaled).all():
        return None
    matrix = matrix.double()
    value = _rank_of_gram(gram(torch.linalg.qr(scaled, mode="r").R @ matrix))
    if value is None or len(rows) < 3:
        return None if value is None else EffectiveRank(value, None)
    root = _root(matrix)
    return EffectiveRank(value, None if root is None else _ranks_of_grams(root @ _left_out_grams(scaled) @ root))


def rank_ratio(credit: EffectiveRank, bp: EffectiveRank) -> EffectiveRank | None:
    """The credit's effective rank over the BP gradient's, on the same rows, left out alike."""
    if bp.value == 0:
        return None
    left_out = None
    if credit.left_out is not None and bp.left_out is not None and bool((bp.left_out > 0).all()):
        left_out = credit.left_out / bp.left_out
    return EffectiveRank(credit.value / bp.value, left_out)


def _root(matrix: Tensor) -> Tensor | None:
    """The symmetric square root of matrix · matrixᵀ (None where it is not finite)."""
    square = matrix @ matrix.T
    if not torch.isfinite(square).all():
        return None
    eigenvalues, vectors = torch.linalg.eigh(square)
    root: Tensor = (vectors * eigenvalues.clamp_min(0).sqrt()) @ vectors.T
    return root


def _left_out_grams(rows: Tensor) -> Tensor:
    """[groups, D, D]: rowsᵀ rows without each group's rows, row r in group r mod the groups (as many
    as rows, up to RANK_GROUPS). The groups' own sum less each: where only one group has nonzero
    rows, its leaving out is exactly zero (no rank), not the rounding of a differently summed total."""
    groups = min(len(rows), RANK_GROUPS)
    padded = F.pad(rows, (0, 0, 0, -len(rows) % groups)).view(-1, groups, rows.shape[1])
    each = torch.einsum("kgd,kge->gde", padded, padded)
    return each.sum(0) - each


def _principal(square: Tensor) -> Tensor:
    """[groups, m, m]: the Gram matrix a aᵀ without each group's rows and columns (row r in group r
    mod the groups), m the most rows one keeps; a shorter one padded with zero rows and columns
    (a zero singular value, which the rank leaves out)."""
    n = square.shape[0]
    kept = _kept(n).to(square.device)
    rows = F.pad(square, (0, 1, 0, 1)).index_select(0, kept.flatten()).view(len(kept), -1, n + 1)
    return torch.gather(rows, 2, kept[:, None, :].expand(-1, rows.shape[1], -1))


@functools.lru_cache(maxsize=8)
def _kept(rows: int) -> Tensor:
    """[groups, m]: the rows each leaving out keeps, a shorter list padded with ``rows``."""
    groups = min(rows, RANK_GROUPS)
    index = torch.arange(rows)
    kept = torch.full((groups, rows - rows // groups), rows, dtype=torch.int64)
    for g in range(groups):
        mine = index[index % groups != g]
        kept[g, : len(mine)] = mine
    return kept


def _rank_of_gram(square: Tensor) -> float | None:
    found = _ranks_of_grams(square.unsqueeze(0))
    return None if found is None else float(found[0])


def _ranks_of_grams(squares: Tensor) -> Tensor | None:
    """The effective rank of each of a batch of Gram matrices (None where one has none)."""
    try:
        s = torch.linalg.eigvalsh(squares).clamp_min(0).sqrt()
    except RuntimeError:  # torch.linalg.LinAlgError: a Gram matrix past float64's range has no rank to report
        return None
    total = s.sum(-1, keepdim=True)
    if not torch.isfinite(s).all() or bool((total == 0).any()):
        return None
    p = s / total
    return torch.exp(-torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(-1))


def gram(matrix: Tensor, row_scale: Tensor | None = None, chunk: int = 4096) -> Tensor:
    """The smaller of a a^T and a^T a, in float64, for ``a`` the rows of ``matrix`` times
    ``row_scale`` (float64; None: 1), summed over ``chunk`` columns (rows) at a time, each
    scaled as it is made float64: a float64 copy of a whole credit matrix was the audit's peak
    memory (BioTorch's LeNet: 59 MB of 256 × 28,800)."""
    wide = matrix.shape[0] <= matrix.shape[1]
    a = matrix if wide else matrix.T
    out = torch.zeros(a.shape[0], a.shape[0], dtype=torch.float64, device=a.device)
    for start in range(0, a.shape[1], chunk):
        part64 = a[:, start : start + chunk].double()
        if row_scale is not None:  # not in place: a float64 matrix's part is its own view
            part64 = part64 * (row_scale.view(-1, 1) if wide else row_scale[start : start + chunk])
        out += part64 @ part64.T
    return out


def clustered_pearson(a: Tensor, b: Tensor) -> tuple[float | None, float | None]:
    """The Pearson correlation of a and b ([nudges, samples]: every point, float64) and its
    delete-one-sample jackknife standard error. The nudges of one sample share its h_l, its
    curvature and its control vector, so the samples, not the nudges, are the independent
    units: the textbook (1 − r²)/√(n − 3) would count every nudge as one and understate the
    error (by half for a random control vector at width 64)."""
    a, b = a.double(), b.double()
    sums = torch.stack([a, b, a * a, b * b, a * b]).sum(1)  # [5, samples]
    counts = torch.full((a.shape[1],), float(a.shape[0]), dtype=torch.float64, device=a.device)
    r = _pearson_from_sums(sums.sum(1), counts.sum())
    if r is None or a.shape[1] < 2:
        return r, None
    left_out = [_pearson_from_sums(sums.sum(1) - sums[:, i], counts.sum() - counts[i]) for i in range(a.shape[1])]
    if any(v is None for v in left_out):
        return r, None
    values = torch.tensor(left_out, dtype=torch.float64)
    m = len(left_out)
    return r, math.sqrt((m - 1) / m * float(((values - values.mean()) ** 2).sum()))


def _pearson_from_sums(sums: Tensor, n: Tensor) -> float | None:
    sa, sb, saa, sbb, sab = (float(v) for v in sums)
    count = float(n)
    cov, va, vb = sab - sa * sb / count, saa - sa * sa / count, sbb - sb * sb / count
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else None


def unused_feedback(model: AdaptedModel, x: Tensor) -> set[str]:
    """The layers whose B no credit at any h_l goes through: those that finish before the first
    hidden state is formed (the layer that makes h0 included). B sends the error to the layer's
    input, and their inputs come before every h_l (a network's first layer: its B is never used)."""
    order: list[str] = []
    names = dict.fromkeys([*model.linear_layers(), *model.hidden_modules])
    model.forward_watched(x, {name: (lambda n: lambda *_: order.append(n))(name) for name in names})
    formed = [order.index(h) for h in model.hidden_modules if h in order]
    if not formed:
        return set()
    return {name for name in model.linear_layers() if name in order and order.index(name) <= min(formed)}


def weight_geometry(
    model: AdaptedModel, feedback: Mapping[str, Tensor], unused: Set[str] = frozenset()
) -> list[tuple[float | None, float | None, bool]]:
    """(angle between W and B in degrees, ‖B‖/‖W‖, whether every B there is unused) over the
    layers inside each hidden module whose B is used (:func:`unused_feedback`)."""
    modules = dict(model.module.named_modules())
    out: list[tuple[float | None, float | None, bool]] = []
    for hidden in model.hidden_modules:
        # a B of another shape than W (layer-wise DFA's [classes, in]) has no angle with it
        within = [n for n in feedback if n == hidden or n.startswith(f"{hidden}.")]
        inside = [n for n in within if feedback[n].shape == modules[n].weight.shape]
        names = [n for n in inside if n not in unused]
        if not names or any(not torch.isfinite(feedback[n]).all() for n in names):
            out.append((None, None, bool(inside) and not names))
            continue
        w = torch.cat([modules[n].weight.detach().double().flatten().cpu() for n in names])
        b = torch.cat([feedback[n].double().flatten().cpu() for n in names])
        cos = float(w @ b) / float(w.norm() * b.norm()) if float(w.norm() * b.norm()) > 0 else None
        angle = None if cos is None else math.degrees(math.acos(max(-1.0, min(1.0, cos))))
        out.append((angle, float(b.norm() / w.norm()) if float(w.norm()) > 0 else None, False))
    return out


def batch_diagnostics(
    model: AdaptedModel,
    model64: AdaptedModel,
    method: CreditMethod,
    batch: Batch,
    feedback: Mapping[str, Tensor],
    refused: list[bool],
    seed: int,
    inject_at: list[Any],
    nudges: int = 0,
    max_se: float = 0.03,
    head: LossHead = CROSS_ENTROPY,
    credits: list[Tensor | None] | None = None,
) -> list[Diagnostics]:
    """Every diagnostic, per layer, from the first batch. ``model64`` is the model's float64
    copy; ``feedback`` the persisted set (a leading draw axis of 1); refused layers get None;
    ``inject_at`` is :func:`injectors` of ``model64``; ``nudges`` for ρ (0: not measured);
    ``credits``: the credit of the batch's first :data:`RANK_SAMPLES` rows where the pass kept
    it (:meth:`CreditMethod.first_terms`), else computed here."""
    generator = torch.Generator().manual_seed(seed)
    n = min(len(batch.y), RANK_SAMPLES)
    small = batch.rows(slice(0, n))
    factors = method.credit_factors(model, small, feedback)
    if credits is None and (factors is None or nudges):
        credits = method.credit(model, small, feedback, torch.Generator().manual_seed(seed))
    scale = torch.ones(n, dtype=torch.float64, device=batch.x.device) if small.scale is None else small.scale
    credit_scale = scale if method.credit_scales_with_error else torch.ones_like(scale)
    ranks: list[tuple[float | tuple[float, float] | None, ...]] = []
    for i, g in enumerate(small.grads):
        c = None if credits is None else credits[i]
        if refused[i] or (c is None and factors is None):
            ranks.append((None,) * 7)
            continue
        # The matrices at their true size: each sample weighs as much as its own error does.
        credit_rank = (
            product_rank(*factors[i], credit_scale) if factors is not None
            else effective_rank(c[0].flatten(1), credit_scale) if c is not None else None
        )  # fmt: skip
        ranks.append(_ranks(credit_rank, effective_rank(g.flatten(1), scale)))
    layers = len(small.grads)
    geometry = (
        weight_geometry(model, {k: v[0] for k, v in feedback.items()}, unused_feedback(model, small.x[:1]))
        if method.feedback_kind == "layer"
        else [(None, None, None)] * layers
    )
    m = min(n, PERTURB_SAMPLES)
    perturbations = (
        _perturbations(model64, small.x[:m], small.y[:m], credits, refused, nudges, max_se, generator, inject_at, head)
        if nudges and credits is not None
        else [(None,) * 7] * layers
    )
    names = ("perturbation_corr", "perturbation_corr_se", "perturbation_corr_pos", "perturbation_corr_neg",
             "perturbation_corr_neg_se", "perturbation_nudges", "perturbation_step", "credit_rank", "bp_rank",
             "rank_ratio", "credit_rank_se", "bp_rank_se", "rank_ratio_se", "rank_ratio_interval",
             "weight_angle_deg", "weight_ratio", "feedback_unused")  # fmt: skip
    rows = zip(perturbations, ranks, geometry, strict=True)
    return [dict(zip(names, (*p, *r, *w), strict=True)) for p, r, w in rows]


def _ranks(credit: EffectiveRank | None, bp: EffectiveRank | None) -> tuple[float | tuple[float, float] | None, ...]:
    """The credit's and the BP gradient's effective ranks, their ratio, the three's standard errors
    (a delete-a-group jackknife over the rows) and the ratio's 95 % interval."""
    ratio = None if credit is None or bp is None else rank_ratio(credit, bp)
    ranks = (credit, bp, ratio)
    errors = [None if r is None else r.se for r in ranks]
    return (
        *(None if r is None else r.value for r in ranks),
        *errors,
        None if ratio is None else _ratio_interval(ratio.value, errors[2]),
    )


def _ratio_interval(ratio: float, se: float | None) -> tuple[float, float] | None:
    """ratio · exp(± t · se / ratio), t Student's on the groups less one: on the log scale, where
    a ratio's error is symmetric and its interval stays positive."""
    if se is None or ratio <= 0:
        return None
    spread = math.exp(student_t(INTERVAL_CONFIDENCE, RANK_GROUPS - 1) * se / ratio)
    return ratio / spread, ratio * spread


def _perturbations(
    model64: AdaptedModel,
    x: Tensor,
    y: Tensor,
    credits: list[Tensor | None],
    refused: list[bool],
    nudges: int,
    max_se: float,
    generator: torch.Generator,
    inject_at: list[Any],
    head: LossHead,
) -> list[tuple[float | None, ...]]:
    """Per layer: ρ, its standard error, the positive and the negative control (with its error),
    the nudges used and their relative step (the first of :data:`STEPS` the positive control
    finds linear); ρ and its controls left out (the error, the count and the last step kept)
    where the error exceeds ``max_se`` or no step is linear (the positive control kept then)."""
    x64, m = as_float64(x), x.shape[0]
    with torch.enable_grad():
        logits, hidden = model64.forward_hidden(x64)
        loss = head.per_sample_loss(logits, y)
        grads = torch.autograd.grad(loss.sum(), hidden)
    base = loss.detach()
    out: list[tuple[float | None, ...]] = []
    per_sample = -(-nudges // m)
    for layer, (h, g) in enumerate(zip(hidden, grads, strict=True)):
        credit, inject = credits[layer], inject_at[layer]
        if credit is None or refused[layer] or inject is None:
            out.append((None,) * 7)
            continue
        c = credit[0][:m].double().reshape(h.shape).to(h.device)
        noise = torch.randn(h.shape, generator=generator, dtype=torch.float64).to(h.device)
        directions = random_nudges(h.detach(), per_sample, 1.0, generator)
        for step in STEPS:
            delta = step * directions
            parts = torch.split(delta, max(1, NUDGE_ROWS // m))
            change = torch.cat([nudged_losses(model64, inject, part, x64, y, head) for part in parts]) - base
            rho, se, positive, negative, negative_se = _correlations(change, delta, (c, g, noise))
            if positive is not None and positive >= LINEAR:
                break
        if se is None or se > max_se:
            rho = positive = negative = negative_se = None
        elif positive is None or positive < LINEAR:
            rho = negative = negative_se = None  # the positive control stays: it says why
        out.append((rho, se, positive, negative, negative_se, change.numel(), step))
    return out


def _correlations(change: Tensor, delta: Tensor, vectors: tuple[Tensor, Tensor, Tensor]) -> tuple[float | None, ...]:
    """ρ and its error for the credit, the positive control's ρ (the BP gradient, the second of
    ``vectors``) and the negative control's with its error, from the loss changes [k, m] the
    nudges ``delta`` caused."""
    # Each sample's points in units of its own first-order sizes, |t_i| |δ_i| for a prediction
    # by t and |g_i| |δ_i| for the loss change: a few samples with large gradients would otherwise
    # make ρ theirs, and the credit comes in unit-error space (its size per sample is not the point).
    step = delta[0].flatten(1).norm(dim=1)
    along = [(t * delta).flatten(2).sum(2) * reciprocals(t.flatten(1).norm(dim=1) * step) for t in vectors]
    change = change * reciprocals(vectors[1].flatten(1).norm(dim=1) * step)
    (rho, se), (positive, _), (negative, negative_se) = (clustered_pearson(a, change) for a in along)
    return rho, se, positive, negative, negative_se


def random_nudges(
    h: Tensor, directions: int, step: float, generator: torch.Generator, support: Tensor | None = None
) -> Tensor:
    """``directions`` random nudges of h, [directions, *h.shape], each sample's of norm
    ``step`` · its ‖h‖ (float64), zero outside ``support`` (a bool tensor of h's shape) when given."""
    v = torch.randn((directions, *h.shape), generator=generator, dtype=torch.float64).to(h.device)
    if support is not None:
        v = v * support
    scale = step * h.flatten(1).norm(dim=1) / v.flatten(2).norm(dim=2).clamp_min(1e-300)
    nudges: Tensor = v * scale.view(*scale.shape, *[1] * (h.dim() - 1))
    return nudges


def tied(h: Tensor) -> Tensor:
    """Where an entry of h equals another entry of the same sample (a bool tensor of h's shape)."""
    flat = h.reshape(h.shape[0], -1)
    values, order = flat.sort(dim=1)
    same = values[:, 1:] == values[:, :-1]
    marked = torch.zeros_like(flat, dtype=torch.bool)
    marked[:, 1:] |= same
    marked[:, :-1] |= same
    return torch.zeros_like(marked).scatter(1, order, marked).view(h.shape)


def injectors(model: AdaptedModel, x: Tensor) -> list[Any]:
    """How the perturbation diagnostic and the reference proof nudge each h_l (found once per
    audit, on the samples ``x``): a forward hook on its module when h_l is that module's
    output, else a pre-hook on the one layer that reads it, when nothing else does (a
    residual add beside it would keep the un-nudged h_l); None when neither holds."""
    modules = dict(model.module.named_modules())
    outputs: dict[str, Any] = {}

    def record(name: str) -> Any:
        return lambda mod, args, out: outputs.setdefault(name, out)

    _, hidden = model.forward_watched(x, {name: record(name) for name in model.hidden_modules})
    if model.batch_dim:  # every h_l is its module's output moved samples first (hooks.capture)
        return [_after(modules[name], model) if isinstance(outputs.get(name), Tensor) else None
                for name in model.hidden_modules]  # fmt: skip
    return [
        _after(modules[name], model) if outputs.get(name) is h else _before(model, modules, layer, h, x)
        for layer, (name, h) in enumerate(zip(model.hidden_modules, hidden, strict=True))
    ]


def nudged_losses(
    model64: AdaptedModel, inject: Any, delta: Tensor, x64: Tensor, y: Tensor, head: LossHead = CROSS_ENTROPY
) -> Tensor:
    """Each sample's loss with its h_l + δ_j, [directions, m]: every nudge in one forward pass."""
    directions, m = delta.shape[:2]
    targets = y.repeat(directions, *[1] * (y.dim() - 1))
    return head.per_sample_loss(nudged_logits(model64, inject, delta, x64), targets).view(directions, m)


def nudged_objective(model64: AdaptedModel, inject: Any, delta: Tensor, x64: Tensor, error: Tensor) -> Tensor:
    """Each sample's ⟨z, ê⟩ with its h_l + δ_j (its input + δ_j where ``inject`` is None), [directions, m]."""
    directions, m = delta.shape[:2]
    logits = nudged_logits(model64, inject, delta, x64)
    return (logits * error.repeat(directions, *[1] * (error.dim() - 1))).flatten(1).sum(1).view(directions, m)


def nudged_logits(model64: AdaptedModel, inject: Any, delta: Tensor, x64: Tensor) -> Tensor:
    """The logits of every nudge, the m samples repeated once per direction: [directions · m, ...].

    The pass runs on the m samples and widens to m × directions rows at h_l, so the
    layers before h_l run once. A model that mixes h_l's rows with an earlier tensor (a
    skip around h_l) cannot be widened there: it fails or returns other rows, and the
    samples are repeated from the input instead. One sample would broadcast silently
    against the widened rows, so it is always repeated from the input. ``inject`` None:
    the nudges are the input's."""
    directions = delta.shape[0]
    nudges = delta.flatten(0, 1)
    repeated = x64.repeat(directions, *[1] * (x64.dim() - 1))
    with torch.no_grad():
        if inject is None:
            return model64.forward_hidden(repeated + nudges)[0]
        logits = None
        with inject(nudges):
            if x64.shape[0] > 1:
                try:
                    logits = model64.forward_hidden(x64)[0]
                except (RuntimeError, UserForwardError):  # a user's model raises through users_forward
                    logits = None
            if logits is None or logits.shape[0] != len(nudges):
                logits = model64.forward_hidden(repeated)[0]
    return logits


def _widened(t: Tensor, nudges: Tensor) -> Tensor:
    """``t`` plus every nudge, its rows repeated once per direction unless they already are."""
    if t.shape[0] != nudges.shape[0]:
        t = t.repeat(nudges.shape[0] // t.shape[0], *[1] * (t.dim() - 1))
    return t + nudges


def _after(module: nn.Module, model: AdaptedModel) -> Any:
    """Nudges added to ``module``'s output (samples first, as the audit holds h_l)."""

    @contextmanager
    def after(delta: Tensor) -> Iterator[None]:
        h = module.register_forward_hook(lambda mod, args, out: model.to_model(_widened(model.to_audit(out), delta)))
        try:
            yield
        finally:
            h.remove()

    return after


def _before(model: AdaptedModel, modules: dict[str, nn.Module], layer: int, h_l: Tensor, x: Tensor) -> Any:
    """Nudges added to the input of the one layer that reads h_l, None unless there is one
    and nothing else reads h_l."""
    readers = _readers(model, modules, h_l, x)
    if len(readers) != 1 or _reads(model, layer, x) != 1:
        return None

    @contextmanager
    def before(delta: Tensor) -> Iterator[None]:
        h = modules[readers[0]].register_forward_pre_hook(lambda mod, args: (_widened(args[0], delta), *args[1:]))
        try:
            yield
        finally:
            h.remove()

    return before


def _reads(model: AdaptedModel, layer: int, x: Tensor) -> int:
    """How many operations of one forward read h_l: the edges into its node of the graph."""
    with torch.enable_grad():
        logits, hidden = model.forward_hidden(x.detach().requires_grad_(x.is_floating_point()))
    target, slot = hidden[layer].grad_fn, hidden[layer].output_nr
    count, todo, seen = 0, [logits.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for following, index in node.next_functions:
            count += following is target and index == slot
            todo.append(following)
    return count


def _readers(model: AdaptedModel, modules: dict[str, nn.Module], target: Tensor, x: Tensor) -> list[str]:
    """The leaf modules whose first input is ``target``'s value in a fresh forward."""
    found: list[str] = []
    leaves = [n for n, m in modules.items() if n and not list(m.children())]

    def record(name: str) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
            if args and isinstance(args[0], Tensor) and args[0].shape == target.shape and torch.equal(args[0], target):
                found.append(name)

        return hook

    model.forward_watched(x, {name: record(name) for name in leaves}, pre=True)
    return found
