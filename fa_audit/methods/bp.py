from __future__ import annotations

import torch

from model_adapters import AdaptedModel

from .base import Batch, CreditMethod, Feedback, Tensor


class Backprop(CreditMethod):
    """The sanity case: the credit is the BP gradient, so every cos_l is 1."""

    name = "bp"
    description = "backpropagation; credit = the BP gradient itself (cos = 1)"
    independent_null = True

    def credit(
        self, model: AdaptedModel, batch: Batch, feedback: Feedback, generator: torch.Generator
    ) -> list[Tensor | None]:
        # no feedback, and no null draw either (independent_null: the null is exact), so never the
        # gradient standing in for a drawn null's credit
        assert not feedback, "bp's null is exact: no feedback is drawn for it"
        return [g.flatten(1).unsqueeze(0) for g in batch.grads]
