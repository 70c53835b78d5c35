"""Binary cross-entropy on logits, for multi-label outputs (recommenders, tagging):
ℓ_i = mean_j [softplus(z_ij) − t_ij z_ij], as PyTorch's BCEWithLogitsLoss per sample;
e_i = (σ(z_i) − t_i) / D, formed without cancellation for the targets 0 and 1."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..errors import InputError
from .base import LossHead, Tensor, float_targets, max_scaled


class BinaryCrossEntropy(LossHead):
    name = "bce"
    description = "binary cross-entropy on [N, D] logits, targets in [0, 1] of the same shape; metric: the loss"
    targets = "values"
    metric = "loss"

    def per_sample_loss(self, output64: Tensor, y: Tensor) -> Tensor:
        return (F.softplus(output64) - y * output64).flatten(1).mean(1)

    def output_error(self, output64: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        # σ(z) − 1 = −σ(−z): exact where σ(z) rounds to 1 (z > 37 in float64)
        error = torch.where(y == 1, -torch.sigmoid(-output64), torch.sigmoid(output64) - y)
        return max_scaled(error / output64[0].numel())

    def target_sums(self, y: Tensor) -> Tensor:
        return y.double().flatten(1).sum(0, keepdim=True)

    def constant_loss(self, sums: Tensor, samples: int) -> float:
        """Each output's frequency p of label 1 (its logit as the constant): the loss is then the
        mean over outputs of the binary entropy H(p), in nats."""
        p = (sums[0] / samples).clamp(0, 1)
        return float(-(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p)).mean())

    def prepare(self, y: Tensor, outputs: int, where: str) -> Tensor:
        y = float_targets(y, outputs, self.name, where)
        if y.numel() and (float(y.min()) < 0 or float(y.max()) > 1):
            raise InputError("y has targets outside [0, 1]; the bce loss needs probabilities", where)
        return y
