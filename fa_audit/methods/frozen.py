from __future__ import annotations

import torch

from model_adapters import AdaptedModel

from .base import Batch, CreditMethod, Feedback, Tensor


class FrozenBlocks(CreditMethod):
    """The frozen-random-blocks baseline: only interface layers train, so no credit."""

    name = "frozen"
    description = "frozen-random-blocks baseline; no credit signal, cosine not defined"
    defines_cosine = False

    def credit(
        self, model: AdaptedModel, batch: Batch, feedback: Feedback, generator: torch.Generator
    ) -> list[Tensor | None]:
        return [None] * len(batch.grads)
