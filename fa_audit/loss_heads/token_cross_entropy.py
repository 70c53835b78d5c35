"""Per-token cross-entropy for language models: logits [N, T, V], targets [N, T] of token ids,
``IGNORE_INDEX`` (−100, as PyTorch) masking positions; one sample is one sequence, its loss the
mean over its unmasked tokens (as ``F.cross_entropy(..., reduction="mean")`` over one sequence),
each token's error exact at any saturation (:mod:`fa_audit.measure.loss_head`). The metric is
the token accuracy, per sequence the fraction of its unmasked tokens predicted right."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ..errors import InputError
from ..measure.loss_head import error_and_rest, log_doubt, per_sample_loss, saturated_rows, top_is
from .base import LossHead, Tensor

IGNORE_INDEX = -100
SATURATION = 1e-7


def _tokens(output: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The logits [N·T, V], the targets [N·T] (masked ones set to 0) and the mask [N, T]."""
    mask = y != IGNORE_INDEX
    return output.reshape(-1, output.shape[-1]), torch.where(mask, y, 0).reshape(-1), mask


def _loss_sums(logits: Tensor, targets: Tensor, mask: Tensor, rest: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per sequence, its unmasked tokens' summed loss and their count (``rest``: the output error's
    log-space sums, when the caller formed them)."""
    return (per_sample_loss(logits, targets, rest).view(mask.shape) * mask).sum(1), mask.sum(1)


class TokenCrossEntropy(LossHead):
    name = "token_cross_entropy"
    description = (
        "per-token cross-entropy over [N, T, V] logits, token ids [N, T] (-100 masked); one sample = one sequence; "
        "metric: token accuracy"
    )
    targets = "tokens"
    metric = "accuracy"
    softmax = True

    def per_sample_loss(self, output64: Tensor, y: Tensor) -> Tensor:
        total, count = _loss_sums(*_tokens(output64, y))
        return total / count

    def output_error(self, output64: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Token t of sequence i: e = s_t ê_t / n_i (n_i its unmasked tokens); the sequence's
        scale is its largest s_t / n_i, its direction each token's ê_t times s_t / max s_t,
        formed as exp(log s_t − log max s_t) so that no ratio of two tiny scales underflows."""
        return self.error_and_perplexity(output64, y)[:2]

    def error_and_perplexity(self, output64: Tensor, y: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        logits, targets, mask = _tokens(output64, y)
        unit, scale, rest = error_and_rest(logits, targets)
        log_scale = scale.log().view(mask.shape).masked_fill(~mask, -math.inf)
        top = log_scale.amax(1, keepdim=True)
        weight = (log_scale - top).exp().nan_to_num(0.0)  # a sequence of saturated tokens: exp(−inf) = 0
        direction = unit.view(*mask.shape, -1).mul_(weight.unsqueeze(-1))  # ê is this head's own: in place
        return direction, top.squeeze(1).exp() / mask.sum(1), _loss_sums(logits, targets, mask, rest)

    def perplexity_terms(self, output64: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return _loss_sums(*_tokens(output64, y))

    def scores(self, output: Tensor, y: Tensor) -> Tensor:
        mask = y != IGNORE_INDEX
        return (top_is(output, torch.where(mask, y, 0)) & mask).sum(1).double() / mask.sum(1)

    def doubt(self, output64: Tensor, y: Tensor) -> Tensor:
        return log_doubt(output64.reshape(-1, output64.shape[-1])).view(y.shape).amin(1)

    def saturated(self, output64: Tensor, y: Tensor) -> float:
        """Sequences, each counted by the fraction of its tokens whose softmax is saturated."""
        mask = y != IGNORE_INDEX
        flat = saturated_rows(output64.reshape(-1, output64.shape[-1]), SATURATION).view(y.shape)
        return float(((flat & mask).sum(1) / mask.sum(1)).sum())

    def label_counts(self, y: Tensor, outputs: int) -> Tensor | None:
        return torch.bincount(y[y != IGNORE_INDEX].cpu(), minlength=outputs)

    def training_loss(self, output: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), y.reshape(-1), ignore_index=IGNORE_INDEX)

    def check_output(self, output: Tensor) -> str | None:
        if output.dim() != 3:
            return f"gives outputs of shape {list(output.shape[1:])} per sample instead of [tokens, vocabulary] logits"
        return None

    def prepare(self, y: Tensor, outputs: int, where: str) -> Tensor:
        if y.is_floating_point() or y.dtype == torch.bool or y.dim() != 2:
            raise InputError(
                f"y has dtype {y.dtype} and per-sample shape {list(y.shape[1:])}; the token_cross_entropy loss needs "
                "one integer token id per position, [N, T]",
                where,
            )
        y = y.long()
        valid = y[y != IGNORE_INDEX]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= outputs):
            bad = int(valid.min()) if int(valid.min()) < 0 else int(valid.max())
            raise InputError(f"token {bad} is outside the model's vocabulary of {outputs}", where)
        if bool((~(y != IGNORE_INDEX).any(1)).any()):
            raise InputError(f"a sequence has every token masked (ignore_index {IGNORE_INDEX}): it has no loss", where)
        return y
