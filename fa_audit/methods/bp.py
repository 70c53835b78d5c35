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
        if not feedback:
            return [g.flatten(1).unsqueeze(0) for g in batch.grads]
        # No feedback to redraw: the null is K random Gaussian directions per sample.
        draws = next(iter(feedback.values())).shape[0]
        return [  # float32 draws: directions need no more, and the same seed gives the same null as ever
            torch.randn((draws, *g.flatten(1).shape), generator=generator, dtype=torch.float32).to(g.device)
            for g in batch.grads
        ]

    def draw_null_feedback(
        self, feedback: Feedback, draws: int, generator: torch.Generator, fixed: Feedback | None = None
    ) -> Feedback:
        return {"null": torch.empty(draws, 0)}
