"""The loss head: what the audit differentiates. The backward that gives every g_l starts
from each sample's output error e = ∂ℓ/∂(output), computed in float64 from the model's float32
output (an error rounded before the backward starts is an error in every number after it),
as a direction ê with entries of order 1 and a scale s (e = s · ê): the backward runs from ê,
so no row underflows, and s scales back only magnitudes (docs/measurements.md)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import torch

from ..errors import InputError

Tensor = torch.Tensor

TargetLayout = Literal["labels", "tokens", "values", "any"]
"""``labels``: one integer per sample; ``tokens``: one integer per position, [N, T]; ``values``:
floats of the output's shape per sample; ``any``: what a user's loss takes."""


class LossHead(ABC):
    """One loss: its per-sample value, its output error, and the task metric it implies."""

    name: str
    description: str
    targets: TargetLayout
    metric: str
    """``accuracy`` (higher is better, per sample a hit) or ``loss`` (lower is better, per
    sample the head's own loss): what the report shows and depth utility's margin compares."""
    softmax: bool = False
    """The head saturates as a softmax does, so a float32 loss rounds 1 − p to 0 (the
    saturation note applies)."""

    @abstractmethod
    def per_sample_loss(self, output64: Tensor, y: Tensor) -> Tensor:
        """ℓ_i, float64, [n]."""

    @abstractmethod
    def output_error(self, output64: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(ê, s): e_i = ∂ℓ_i/∂output_i = s_i · ê_i, float64, ê of ``output64``'s shape and s of [n]."""

    def training_loss(self, output: Tensor, y: Tensor) -> Tensor:
        """The mean loss a fitted baseline trains on (as a training loop computes it)."""
        return self.per_sample_loss(output.double(), y).mean()

    def scores(self, output: Tensor, y: Tensor) -> Tensor:
        """Per sample, what the metric averages: a hit (bool) for accuracy, ℓ_i for loss."""
        return self.per_sample_loss(output.double(), y)

    def doubt(self, output64: Tensor, y: Tensor) -> Tensor:
        """log of each sample's distance from a perfect output: the smallest first, where the
        float32 rounding of a gradient strikes first (the float64 agreement's rows)."""
        return self.output_error(output64, y)[1].log()

    def saturated(self, output64: Tensor, y: Tensor) -> float:
        """Samples whose float32 loss would be rounding noise (softmax heads only)."""
        return 0.0

    def label_counts(self, y: Tensor, outputs: int) -> Tensor | None:
        """How often each class is the target (None: the targets are not classes), so that the
        majority's share, the accuracy of always answering it, is known."""
        return None

    def target_sums(self, y: Tensor) -> Tensor | None:
        """One batch's sums of its targets, from which :meth:`constant_loss` is formed (summed over
        batches and ranks); None where the head knows no best constant output (a user's loss)."""
        return None

    def constant_loss(self, sums: Tensor, samples: int) -> float:
        """The mean loss of the best constant output over ``samples`` samples whose targets gave
        ``sums``: what a model that learned nothing of x reaches, as the majority label's share is
        for accuracy (a frozen-blocks baseline must beat it)."""
        raise NotImplementedError

    def perplexity_terms(self, output64: Tensor, y: Tensor) -> tuple[Tensor, Tensor] | None:
        """Per sample, its summed token losses and its token count, for a head over tokens (the
        eval set's perplexity is exp of their ratio); None for other heads."""
        return None

    def error_and_perplexity(self, output64: Tensor, y: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """:meth:`output_error` and :meth:`perplexity_terms` of one batch at once (a head over
        tokens forms both from the same log-space pass)."""
        return (*self.output_error(output64, y), self.perplexity_terms(output64, y))

    def check_output(self, output: Tensor) -> str | None:
        """What is wrong with one batch's output for this head (None: nothing)."""
        if output.dim() != 2:
            return f"gives outputs of shape {list(output.shape[1:])} per sample instead of one row"
        return None

    @abstractmethod
    def prepare(self, y: Tensor, outputs: int, where: str) -> Tensor:
        """One batch's targets, checked for this head and converted (an :class:`InputError`
        naming ``where``, the eval data, otherwise)."""


def max_scaled(e: Tensor) -> tuple[Tensor, Tensor]:
    """(ê, s) with s_i = max |e_i| (ê's largest entry is ±1; a row of zeros stays zero, s = 0)."""
    s = e.flatten(1).abs().amax(1)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    return e / safe.view(-1, *[1] * (e.dim() - 1)), s


def float_targets(y: Tensor, outputs: int, head: str, where: str) -> Tensor:
    """Float targets of one row of ``outputs`` per sample ([n] when there is one output); integer
    class labels [n] as their one-hot rows, as a code that trains these losses on labels makes them
    (the DRTP code's default: BCE on one-hot targets)."""
    if not (y.is_floating_point() or y.dtype == torch.bool):
        if y.is_complex() or y.dim() != 1:
            raise InputError(f"y has dtype {y.dtype}; the {head} loss needs float targets of the output's shape", where)
        y = one_hot_labels(y, outputs, head, where)
    y = y.double()
    if y.dim() == 1 and outputs == 1:
        y = y.unsqueeze(1)
    if y.dim() != 2 or y.shape[1] != outputs:
        raise InputError(
            f"y has per-sample shape {list(y.shape[1:])}; the {head} loss needs [{outputs}], the model's output",
            where,
        )
    if not torch.isfinite(y).all():
        raise InputError(f"y contains NaN or Inf; the {head} loss needs finite targets", where)
    if y.numel() and float(y.abs().max()) > FLOAT32_MAX:
        raise InputError(
            f"y holds {float(y.abs().max()):.3g}, beyond what a float32 model can output ({FLOAT32_MAX:.3g}); "
            f"the {head} loss needs targets in its range",
            where,
        )
    return y


def one_hot_labels(y: Tensor, outputs: int, head: str, where: str) -> Tensor:
    """Integer labels [n] as one-hot rows of ``outputs``; with one output, the integers are the values."""
    if outputs == 1:
        return y.double()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= outputs):
        wrong = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise InputError(
            f"y holds label {wrong}; integer labels for the {head} loss are class indices in [0, {outputs}), "
            "one a model output",
            where,
        )
    return torch.nn.functional.one_hot(y.long(), outputs).double()


FLOAT32_MAX = float(torch.finfo(torch.float32).max)
