"""Diagnostics that triangulate the cosine, measured once on the first eval batch (capped
samples, so their cost stays small beside the audit's):

- perturbation correlation: does the credit predict how the loss actually moves when
  h_l is nudged? Over M random nudges δ_j, each of one sample's h_l, the Pearson correlation
  of <c_l, δ_j> with that sample's L(h_l + δ_j) - L(h_l) (float64), with the BP gradient as
  the positive control (≈ 1) and an independent random vector as the negative control (≈ 0);
- effective rank (Roy & Vetterli) of the credit matrix and of the BP-gradient matrix,
  and their ratio: a credit of much lower rank than the gradient has collapsed;
- for FA-family methods, the angle between W and B and the norm ratio ‖B‖/‖W‖ of the
  layers inside each hidden module (what BioTorch logs while training)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from model_adapters import AdaptedModel

from ..methods import Batch, CreditMethod

Tensor = torch.Tensor

RANK_SAMPLES = 256
PERTURB_SAMPLES = 4
DIRECTIONS = 32
"""Nudges in all, each of one sample's h_l (8 per sample on 4): the correlation's noise comes
from their number (± 0.18 for 32). A nudge of every sample at once costs a row per sample,
4× the float64 forwards for the same number of points (2.8 s of a ResNet-18's audit)."""
STEP = 1e-3
"""Each sample's nudge has this norm relative to its ‖h_l‖: small enough to stay linear."""


Diagnostics = dict[str, float | None]
"""One layer's diagnostics, by the names :class:`fa_audit.report.LayerStats` gives them."""


def effective_rank(matrix: Tensor) -> float | None:
    """exp of the entropy of the normalised singular values (Roy & Vetterli, 2007), taken
    as the square roots of the eigenvalues of the smaller Gram matrix (a wide matrix's SVD
    costs several times more for the same values)."""
    s = torch.linalg.eigvalsh(gram(matrix)).clamp_min(0).sqrt()
    if float(s.sum()) == 0.0 or not torch.isfinite(s).all():
        return None
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def gram(matrix: Tensor, chunk: int = 4096) -> Tensor:
    """The smaller of a a^T and a^T a, in float64, summed over ``chunk`` columns (rows) at a
    time: a float64 copy of a whole credit matrix was the audit's peak memory (BioTorch's
    LeNet: 59 MB of 256 × 28,800)."""
    a = matrix if matrix.shape[0] <= matrix.shape[1] else matrix.T
    out = torch.zeros(a.shape[0], a.shape[0], dtype=torch.float64, device=a.device)
    for start in range(0, a.shape[1], chunk):
        part64 = a[:, start : start + chunk].double()
        out += part64 @ part64.T
    return out


def pearson(a: Tensor, b: Tensor) -> float | None:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    scale = float(a.norm() * b.norm())
    return float((a * b).sum()) / scale if scale > 0 else None


def weight_geometry(model: AdaptedModel, feedback: Mapping[str, Tensor]) -> list[tuple[float | None, float | None]]:
    """(angle between W and B in degrees, ‖B‖/‖W‖) over the layers inside each hidden module."""
    modules = dict(model.module.named_modules())
    out: list[tuple[float | None, float | None]] = []
    for hidden in model.hidden_modules:
        names = [n for n in feedback if n == hidden or n.startswith(f"{hidden}.")]
        if not names or any(not torch.isfinite(feedback[n]).all() for n in names):
            out.append((None, None))
            continue
        w = torch.cat([modules[n].weight.detach().double().flatten().cpu() for n in names])
        b = torch.cat([feedback[n].double().flatten().cpu() for n in names])
        cos = float(w @ b) / float(w.norm() * b.norm()) if float(w.norm() * b.norm()) > 0 else None
        angle = None if cos is None else math.degrees(math.acos(max(-1.0, min(1.0, cos))))
        out.append((angle, float(b.norm() / w.norm()) if float(w.norm()) > 0 else None))
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
) -> list[Diagnostics]:
    """Every diagnostic, per layer, from the first batch. ``model64`` is the model's float64
    copy; ``feedback`` the persisted set (a leading draw axis of 1); refused layers get None;
    ``inject_at`` is :func:`injectors` of ``model64``."""
    generator = torch.Generator().manual_seed(seed)
    n = min(len(batch.y), RANK_SAMPLES)
    small = Batch(x=batch.x[:n], y=batch.y[:n], error=batch.error[:n], grads=[g[:n] for g in batch.grads])
    credits = method.credit(model, small, feedback, torch.Generator().manual_seed(seed))
    ranks: list[tuple[float | None, float | None, float | None]] = []
    for i, (c, g) in enumerate(zip(credits, small.grads, strict=True)):
        if c is None or refused[i]:
            ranks.append((None, None, None))
            continue
        credit_rank, bp_rank = effective_rank(c[0].flatten(1)), effective_rank(g.flatten(1))
        ratio = credit_rank / bp_rank if credit_rank is not None and bp_rank else None
        ranks.append((credit_rank, bp_rank, ratio))
    geometry = (
        weight_geometry(model, {k: v[0] for k, v in feedback.items()})
        if method.feedback_kind == "layer"
        else [(None, None)] * len(credits)
    )
    m = min(n, PERTURB_SAMPLES)
    perturbations = _perturbations(model64, small.x[:m], small.y[:m], credits, refused, m, generator, inject_at)
    names = ("perturbation_corr", "perturbation_corr_pos", "perturbation_corr_neg", "credit_rank", "bp_rank",
             "rank_ratio", "weight_angle_deg", "weight_ratio")  # fmt: skip
    rows = zip(perturbations, ranks, geometry, strict=True)
    return [dict(zip(names, (*p, *r, *w), strict=True)) for p, r, w in rows]


def _perturbations(
    model64: AdaptedModel,
    x: Tensor,
    y: Tensor,
    credits: list[Tensor | None],
    refused: list[bool],
    m: int,
    generator: torch.Generator,
    inject_at: list[Any],
) -> list[tuple[float | None, float | None, float | None]]:
    x64 = x.double()
    with torch.enable_grad():
        logits, hidden = model64.forward_hidden(x64)
        loss = F.cross_entropy(logits, y, reduction="none")
        grads = torch.autograd.grad(loss.sum(), hidden)
    base = loss.detach()
    out: list[tuple[float | None, float | None, float | None]] = []
    for layer, (h, g) in enumerate(zip(hidden, grads, strict=True)):
        credit, inject = credits[layer], inject_at[layer]
        if credit is None or refused[layer] or inject is None:
            out.append((None, None, None))
            continue
        c = credit[0][:m].double().reshape(h.shape).to(h.device)
        noise = torch.randn(h.shape, generator=generator, dtype=torch.float64).to(h.device)
        delta = random_nudges(h.detach(), -(-DIRECTIONS // m), STEP, generator)
        change = (nudged_losses(model64, inject, delta, x64, y) - base).flatten()
        along = [(t * delta).flatten(2).sum(2).flatten() for t in (c, g, noise)]  # predicted, positive, negative
        out.append(tuple(pearson(a, change) for a in along))  # type: ignore[arg-type]
    return out


def random_nudges(
    h: Tensor, directions: int, step: float, generator: torch.Generator, on_support: bool = False
) -> Tensor:
    """``directions`` random nudges of h, [directions, *h.shape], each sample's of norm
    ``step`` · its ‖h‖ (float64); ``on_support``: zero where h is exactly zero."""
    v = torch.randn((directions, *h.shape), generator=generator, dtype=torch.float64).to(h.device)
    if on_support:
        v = v * (h != 0)
    scale = step * h.flatten(1).norm(dim=1) / v.flatten(2).norm(dim=2).clamp_min(1e-300)
    nudges: Tensor = v * scale.view(*scale.shape, *[1] * (h.dim() - 1))
    return nudges


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
    return [
        _after(modules[name]) if outputs.get(name) is h else _before(model, modules, layer, h, x)
        for layer, (name, h) in enumerate(zip(model.hidden_modules, hidden, strict=True))
    ]


def nudged_losses(model64: AdaptedModel, inject: Any, delta: Tensor, x64: Tensor, y: Tensor) -> Tensor:
    """Each sample's loss with its h_l + δ_j, [directions, m]: every nudge in one forward pass.

    The pass runs on the m samples and widens to m × directions rows at h_l, so the
    layers before h_l run once. A model that mixes h_l's rows with an earlier tensor (a
    skip around h_l) cannot be widened there: it fails or returns other rows, and the
    samples are repeated from the input instead. One sample would broadcast silently
    against the widened rows, so it is always repeated from the input."""
    directions, m = delta.shape[:2]
    nudges = delta.flatten(0, 1)
    logits = None
    with torch.no_grad(), inject(nudges):
        if m > 1:
            try:
                logits = model64.forward_hidden(x64)[0]
            except RuntimeError:
                logits = None
        if logits is None or logits.shape[0] != len(nudges):
            logits = model64.forward_hidden(x64.repeat(directions, *[1] * (x64.dim() - 1)))[0]
    return F.cross_entropy(logits, y.repeat(directions), reduction="none").view(directions, m)


def _widened(t: Tensor, nudges: Tensor) -> Tensor:
    """``t`` plus every nudge, its rows repeated once per direction unless they already are."""
    if t.shape[0] != nudges.shape[0]:
        t = t.repeat(nudges.shape[0] // t.shape[0], *[1] * (t.dim() - 1))
    return t + nudges


def _after(module: nn.Module) -> Any:
    """Nudges added to ``module``'s output."""

    @contextmanager
    def after(delta: Tensor) -> Iterator[None]:
        h = module.register_forward_hook(lambda mod, args, out: _widened(out, delta))
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
        logits, hidden = model.forward_hidden(x.detach().requires_grad_())
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
