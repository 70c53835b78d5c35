"""Mean squared error, for regression: ℓ_i = mean_j (o_ij − t_ij)², as PyTorch's MSELoss
per sample; e_i = 2 (o_i − t_i) / D."""

from __future__ import annotations

import torch

from .base import LossHead, Tensor, float_targets, max_scaled


class MeanSquaredError(LossHead):
    name = "mse"
    description = "mean squared error over [N, D] outputs, float targets of the same shape; metric: the loss"
    targets = "values"
    metric = "loss"

    def per_sample_loss(self, output64: Tensor, y: Tensor) -> Tensor:
        return (output64 - y).pow(2).flatten(1).mean(1)

    def output_error(self, output64: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return max_scaled(2 * (output64 - y) / output64[0].numel())

    def target_sums(self, y: Tensor) -> Tensor:
        flat = y.double().flatten(1)
        return torch.stack([flat.sum(0), flat.pow(2).sum(0)])

    def constant_loss(self, sums: Tensor, samples: int) -> float:
        """Each output's mean target: the loss is then the mean over outputs of the targets' variance."""
        mean, square = sums / samples
        return float((square - mean.pow(2)).clamp_min(0).mean())

    def prepare(self, y: Tensor, outputs: int, where: str) -> Tensor:
        return float_targets(y, outputs, self.name, where)
