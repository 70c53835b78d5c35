from __future__ import annotations

from collections.abc import Mapping

import torch

from model_adapters import AdaptedModel

from .base import Batch, CreditMethod, Tensor


class FrozenBlocks(CreditMethod):
    """The frozen-random-blocks baseline: only interface layers train, so no credit."""

    name = "frozen"
    description = "frozen-random-blocks baseline; no credit signal, cosine not defined"
    defines_cosine = False

    def credit(
        self, model: AdaptedModel, batch: Batch, feedback: Mapping[str, Tensor], generator: torch.Generator
    ) -> list[Tensor | None]:
        return [None] * len(batch.grads)
