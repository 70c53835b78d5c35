from __future__ import annotations

import torch

from model_adapters import AdaptedModel

from .base import Batch, CreditMethod, Feedback, Probe, Tensor, Terms


class DirectFeedbackAlignment(CreditMethod):
    """c_l = e · B_l, one matrix [classes, width] per module output."""

    name = "dfa"
    description = "direct feedback alignment; c_l = e · B_l, B keyed by module (embed, blocks.0, ...)"
    needs_feedback = True
    feedback_kind = "hidden"

    def signal(self, batch: Batch) -> Tensor:
        """What B projects: the output error e = softmax - onehot(y) (its direction ê: see Batch.error)."""
        return batch.error

    def feedback_shapes(self, model: AdaptedModel, probe: Probe) -> dict[str, tuple[int, ...]]:
        return {name: (probe.classes, probe.widths[i]) for i, name in enumerate(model.hidden_modules)}

    def layer_keys(self, model: AdaptedModel, layer: int) -> set[str] | None:
        return {model.hidden_modules[layer]}

    def credit(
        self, model: AdaptedModel, batch: Batch, feedback: Feedback, generator: torch.Generator
    ) -> list[Tensor | None]:
        signal = self.signal(batch).double()
        return [torch.einsum("nc,kcw->knw", signal, feedback[name].double()) for name in model.hidden_modules]

    def alignment_terms(
        self, model: AdaptedModel, batch: Batch, feedback: Feedback, generator: torch.Generator, targets: list[Tensor]
    ) -> Terms:
        """<e B_k, g> = e . (B_k g) and |e B_k|^2 = e (B_k B_k^T) e^T: products with the
        [classes]-sized side only, so the [K, n, width] credit is never built."""
        e_t = self.signal(batch).double().T  # [classes, n]
        terms: list[tuple[Tensor, Tensor] | None] = []
        for name, g in zip(model.hidden_modules, targets, strict=True):
            b = feedback[name].double()  # [K, classes, width]
            dot = ((b @ g.T) * e_t).sum(1)
            gram = b @ b.transpose(1, 2)
            terms.append((dot, ((gram @ e_t) * e_t).sum(1)))
        return terms


class DirectRandomTargetProjection(DirectFeedbackAlignment):
    """c_l = onehot(y) · B_l: the target, not the error, is projected (Frenkel et al.)."""

    name = "drtp"
    description = "direct random target projection; c_l = onehot(y) · B_l, B as for dfa"
    credit_scales_with_error = False
    projects_labels = True

    def signal(self, batch: Batch) -> Tensor:
        return torch.nn.functional.one_hot(batch.y, batch.error.shape[1]).to(batch.error.dtype)
