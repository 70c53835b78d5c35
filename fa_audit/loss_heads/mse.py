"""Mean squared error, for regression: ℓ_i = mean_j (o_ij − t_ij)², as PyTorch's MSELoss
per sample; e_i = 2 (o_i − t_i) / D."""

from __future__ import annotations

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

    def prepare(self, y: Tensor, outputs: int, where: str) -> Tensor:
        return float_targets(y, outputs, self.name, where)
