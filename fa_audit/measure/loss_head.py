"""The float64 loss head: each sample's cross-entropy and its output error e = ∂ℓ/∂logits,
exact to float64's relative precision however saturated the softmax is (pitfall 3,
docs/pitfalls.md), as a direction ê and a scale s that no underflow can zero.

``softmax − onehot`` loses e_y = p_y − 1 to cancellation once 1 − p_y < 1.1e-16 (a logit
margin of 37), even in float64; e cast to float32 for the model's backward underflows once
e < 1e-38 (a margin of 87), leaving a row of exact zeros that a cosine must drop; and the
products of squares a cosine forms underflow float64 once ‖g‖ < 1e-154. All three are
avoided: the backward is linear in each sample's e, so the audit runs it from ê (entries of
order 1, formed in log space) and works in that unit-error space wherever a direction is
measured (every cosine, the null, dir_stab, the float64 agreement); s scales back only the
magnitudes (‖g‖, the magnitude-weighted aggregations, the effective ranks)."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .pages import float64

Tensor = torch.Tensor


def _log_rest(logits64: Tensor, y: Tensor) -> Tensor:
    """log Σ_{j≠y} exp(z_j) per sample (−inf with a single class)."""
    # scatter, not a one-hot mask: F.one_hot is int64, 8 bytes per logit (0.5 GB a batch of a language model)
    others = logits64.scatter(-1, y.unsqueeze(-1), float("-inf"))
    return others.logsumexp(-1)


def per_sample_loss(logits64: Tensor, y: Tensor, rest: Tensor | None = None) -> Tensor:
    """ℓ_i = log(1 + Σ_{j≠y} exp(z_j − z_y)), exact where F.cross_entropy rounds a saturated
    sample's loss to 0 (it forms log(1 + tiny) in float64); ``rest``: :func:`_log_rest`'s, when
    the caller has it (:func:`output_error` gives it)."""
    target = logits64.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return F.softplus((_log_rest(logits64, y) if rest is None else rest) - target)


def output_error(logits64: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(ê, s): e = softmax(z) − onehot(y) = s · ê per sample, float64, with no cancellation
    and no underflow at any margin. s = 1 − p_y = Σ_{j≠y} p_j is e's largest entry in
    magnitude (it is |e_y|), so ê_y = −1 and ê_j = p_j / (1 − p_y), the softmax of the other
    classes' logits: ê holds entries of order 1 however saturated the sample is, and s is
    formed in log space (it underflows float64 only past a margin of 745, and then only the
    magnitudes it scales are lost, never a direction)."""
    others, scale, _ = error_and_rest(logits64, y)
    return others, scale


def error_and_rest(logits64: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`output_error`'s (ê, s) and the log Σ_{j≠y} exp(z_j) they are formed from, which
    :func:`per_sample_loss` takes too: one pass over the logits fewer for a head that needs both."""
    at = y.unsqueeze(-1)
    # One copy of the logits, worked in place: a language model's batch of logits is 32 MB, and each
    # fresh tensor of that size costs more in page faults than its arithmetic. The softmax of the
    # other classes' logits, shifted by their largest (logsumexp's way: an infinite largest, with
    # one class, by 0): exp(−inf) = 0 at y, then −1.
    others = float64(logits64, copy=True).scatter_(-1, at, float("-inf"))  # on the pass's pages (.pages)
    top = others.amax(-1, keepdim=True)
    top.masked_fill_(top.isinf(), 0.0)
    total = others.sub_(top).exp_().sum(-1, keepdim=True)
    rest = (total.log() + top).squeeze(-1)
    others.div_(total).scatter_(-1, at, -1.0)
    # log Σ_j exp(z_j) from the rest and z_y: one pass over the logits fewer than logsumexp
    scale = (rest - torch.logaddexp(rest, logits64.gather(-1, at).squeeze(-1))).exp()
    return others, scale, rest


def log_doubt(logits64: Tensor) -> Tensor:
    """log(1 − p_max) per sample, exact at any margin (where −expm1(log p_max) is 0 past a margin of 37)."""
    top, at = logits64.max(-1)
    rest = _log_rest(logits64, at)
    return rest - torch.logaddexp(rest, top)


def saturated_rows(logits64: Tensor, threshold: float) -> Tensor:
    """Per sample, whether 1 − p_max < ``threshold``: :func:`log_doubt` on the rows that can be,
    those with no other logit within log(V · threshold) of the largest (1 − p_max ≥ p_2nd ≥
    exp(z_2nd − z_max) / V, every z_j being at most z_max): a max and a count over the logits,
    rather than three log-space passes (or a top-2: 11 ms a batch of 16,384 tokens of 256, against 9)."""
    if logits64.shape[-1] == 1:
        return log_doubt(logits64) < math.log(threshold)
    top = logits64.amax(-1, keepdim=True)
    # a hair wide (1e-9): rounding at the edge may only send a row to the exact test
    near = _count(logits64 >= top + (math.log(logits64.shape[-1] * threshold) - 1e-9))
    out = torch.zeros(near.shape, dtype=torch.bool, device=logits64.device)
    maybe = near == 1
    if bool(maybe.any()):
        out[maybe] = log_doubt(logits64[maybe]) < math.log(threshold)
    return out


def top_is(output: Tensor, y: Tensor) -> Tensor:
    """Per row, whether ``y`` is ``output.argmax(-1)``, the first of the largest (argmax over a
    language model's 256 logits took 9 ms a batch of 16,384 tokens, a max and a comparison 7)."""
    largest = output == output.amax(-1, keepdim=True)
    hit = largest.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    unsure = _count(largest) != 1
    if bool(unsure.any()):  # argmax's own answer where logits tie (it takes the first) or a NaN is the largest
        hit[unsure] = output[unsure].argmax(-1) == y[unsure]
    return hit


def _count(flags: Tensor) -> Tensor:
    """The true entries per row: as bytes summed into int32 (a bool's sum is int64's slow path, 13 ms
    a batch of 16,384 rows of 256 against 1.6)."""
    return flags.view(torch.uint8).sum(-1, dtype=torch.int32)


def rows_times(values: Tensor, scale: Tensor) -> Tensor:
    """Each sample's row of ``values`` ([n, ...]) times its scale, in float64."""
    return values.double() * scale.view(-1, *[1] * (values.dim() - 1))
