from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from model_adapters import AdaptedModel

from .base import Batch, CreditMethod, Probe, Tensor


class FeedbackAlignment(CreditMethod):
    """The output error sent backward through the real network with every Linear's W
    replaced by its feedback B; LayerNorm, activations and residual adds keep their
    true Jacobians. K feedback draws run as one forward on the batch repeated K times."""

    name = "fa"
    description = "feedback alignment; e sent backward with each Linear's W replaced by B (same shape)"
    needs_feedback = True

    def feedback_shapes(self, model: AdaptedModel, probe: Probe) -> dict[str, tuple[int, ...]]:
        modules = dict(model.module.named_modules())
        return {name: tuple(modules[name].weight.shape) for name in _linear_names(model)}

    def credit(
        self, model: AdaptedModel, batch: Batch, feedback: Mapping[str, Tensor], generator: torch.Generator
    ) -> list[Tensor | None]:
        draws = next(iter(feedback.values())).shape[0]
        x = batch.x.repeat(draws, *([1] * (batch.x.dim() - 1)))
        with torch.enable_grad(), _feedback_backward(model, feedback):
            logits, hidden = model.forward_hidden(x)
            credit = torch.autograd.grad(logits, hidden, grad_outputs=batch.error.repeat(draws, 1))
        n = batch.x.shape[0]
        return [c.reshape(draws, n, -1) for c in credit]


def _linear_names(model: AdaptedModel) -> list[str]:
    return [name for name, mod in model.module.named_modules() if isinstance(mod, nn.Linear)]


class _FeedbackLinearGrad(torch.autograd.Function):
    """Identity on the layer's true output; backward sends grad_out @ B_k to the input
    of draw k and nothing through W (the true path is cut)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, out: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(b)
        ctx.x_shape = x.shape
        return out.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None]:
        (b,) = ctx.saved_tensors
        draws = b.shape[0]
        per_draw = grad_out.reshape(draws, -1, grad_out.shape[-1])
        grad_x = torch.bmm(per_draw, b)  # [K, n*, out] @ [K, out, in]
        return grad_x.reshape(ctx.x_shape), None, None


@contextmanager
def _feedback_backward(model: AdaptedModel, feedback: Mapping[str, Tensor]) -> Iterator[None]:
    def hook(name: str) -> Any:
        def swap(module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
            # `out` keeps the graph alive so later hidden states require grad.
            swapped: Tensor = _FeedbackLinearGrad.apply(inputs[0], out, feedback[name])  # type: ignore[no-untyped-call]
            return swapped

        return swap

    modules = dict(model.module.named_modules())
    handles = [modules[name].register_forward_hook(hook(name)) for name in _linear_names(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
