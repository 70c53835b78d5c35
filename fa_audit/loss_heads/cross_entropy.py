"""Cross-entropy over one integer label per sample: the default head, exact at any
saturation (:mod:`fa_audit.measure.loss_head` holds its float64 arithmetic)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..errors import InputError
from ..measure.loss_head import log_doubt, output_error, per_sample_loss, saturated_rows, top_is
from .base import LossHead, Tensor

SATURATION = 1e-7
"""1 - p_max below this cannot be resolved by a float32 softmax (its epsilon is 1.2e-7)."""


class CrossEntropy(LossHead):
    name = "cross_entropy"
    description = "softmax cross-entropy over [N, C] logits, one integer label per sample; metric: accuracy"
    targets = "labels"
    metric = "accuracy"
    softmax = True

    def per_sample_loss(self, output64: Tensor, y: Tensor) -> Tensor:
        return per_sample_loss(output64, y)

    def output_error(self, output64: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return output_error(output64, y)

    def training_loss(self, output: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(output, y)

    def scores(self, output: Tensor, y: Tensor) -> Tensor:
        return top_is(output, y)

    def doubt(self, output64: Tensor, y: Tensor) -> Tensor:
        return log_doubt(output64)

    def saturated(self, output64: Tensor, y: Tensor) -> float:
        return float(saturated_rows(output64, SATURATION).sum())

    def label_counts(self, y: Tensor, outputs: int) -> Tensor | None:
        return torch.bincount(y.cpu(), minlength=outputs)

    def check_output(self, output: Tensor) -> str | None:
        if output.dim() != 2:
            return f"gives logits of shape {list(output.shape[1:])} per sample instead of one row of class scores"
        return None

    def prepare(self, y: Tensor, outputs: int, where: str) -> Tensor:
        y = y.long()
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= outputs):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise InputError(f"label {bad} is outside the model's {outputs} classes", where)
        return y


CROSS_ENTROPY = CrossEntropy()
