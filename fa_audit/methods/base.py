"""What a credit-assignment method must provide: its credit signal c_l at every
hidden state, for its persisted feedback and for K fresh null draws at once."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from model_adapters import AdaptedModel

from ..measure.functional import dot_and_square

Tensor = torch.Tensor
Feedback = Mapping[str, Tensor]
"""Feedback by layer name: one matrix, or K draws stacked along a leading axis."""
Terms = list[tuple[Tensor, Tensor] | None]
"""Per layer, row-wise <c_l, g_l> and |c_l|^2 ([K, n], float64); None where no credit is defined."""


class NullDraws(Mapping[str, Tensor]):
    """K null draws of every matrix, each made when it is asked for, so that a backward walk
    holds one draw rather than K (20 of a ResNet-18's weights are 0.9 GB). Draw k of the
    j-th matrix comes from its own generator, seeded from the audit's once: the same draw
    however the draws are blocked and on whatever rank. Indexing by key stacks all K."""

    def __init__(self, like: Feedback, draws: int, generator: torch.Generator, fixed: Feedback | None = None) -> None:
        self._like = {key: (b.shape, b.dtype, b.device, b.std().cpu()) for key, b in like.items()}
        self._fixed = dict(fixed or {})
        self._keys = [*self._like, *self._fixed]
        self._seeds = torch.randint(0, 2**62, (draws,), generator=generator).tolist()

    @property
    def draws(self) -> int:
        return len(self._seeds)

    def draw(self, index: int) -> dict[str, Tensor]:
        return {key: self._one(key, index) for key in self._keys}

    def _one(self, key: str, index: int) -> Tensor:
        if key in self._fixed:
            return self._fixed[key]
        shape, dtype, device, std = self._like[key]
        generator = torch.Generator().manual_seed(self._seeds[index] + self._keys.index(key))
        # scaled in place: a ResNet-18's draw is 11 M numbers
        return torch.randn(shape, generator=generator, dtype=dtype).mul_(std).to(device)

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._like and key not in self._fixed:
            raise KeyError(key)
        return torch.stack([self._one(key, index) for index in range(self.draws)])

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def draw_count(feedback: Feedback) -> int:
    """K, the draws ``feedback`` holds along its leading axis."""
    return feedback.draws if isinstance(feedback, NullDraws) else next(iter(feedback.values())).shape[0]


def one_draw(feedback: Feedback, index: int) -> Mapping[str, Tensor]:
    """Draw ``index`` of every matrix of ``feedback``."""
    if isinstance(feedback, NullDraws):
        return feedback.draw(index)
    return {key: b[index] for key, b in feedback.items()}


def backward_start(logits: Tensor, error: Tensor) -> Tensor:
    """A scalar whose gradient at the logits is ê in the logits' dtype: the float64 head's error
    rounded once, as the model's own backward takes it. (autograd.grad with grad_outputs would
    import torch's symbolic-shape machinery, sympy included: 0.3 s on the first call; ⟨z, ê⟩
    summed would form a product and its gradient, a language model's largest tensors.)"""
    start: Tensor = _Start.apply(logits, error.to(logits.dtype))  # type: ignore[no-untyped-call]
    return start


class _Start(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: Tensor, error: Tensor) -> Tensor:
        ctx.error = error
        return logits.new_zeros(())

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return ctx.error if bool(grad == 1) else ctx.error * grad, None


@dataclass(frozen=True)
class Forward:
    """A forward pass kept alive for more backward walks: the logits (the model's dtype) and
    the hidden states, still in the graph, and what the method's instrumentation gave
    (which Jacobians the next walk takes)."""

    logits: Tensor
    hidden: list[Tensor]
    switch: object
    """The method's own (FA's: which Jacobians the walks take)."""


@dataclass(frozen=True)
class Batch:
    """One eval batch after the forward and backward pass (detached)."""

    x: Tensor
    y: Tensor
    error: Tensor
    """ê, the output error e = softmax(logits) - onehot(y) = d(loss)/d(logits) of each sample
    divided by its scale s, [n, classes], float64 (:func:`fa_audit.measure.loss_head.output_error`):
    exact at any saturation, and of order 1, so no backward from it underflows."""
    grads: list[Tensor]
    """ĝ_l = g_l / s, g_l = d(summed loss)/d(h_l); each [n, *h_l.shape[1:]], float64."""
    scale: Tensor | None = None
    """s per sample (float64): e = s · ê, g_l = s · ĝ_l; None: 1."""
    forward: Forward | None = None
    """The BP pass's own graph, when the method instrumented it (:meth:`CreditMethod.instrument`)."""
    projected: Tensor | None = None
    """The gradient at the model's ``error_point`` in the unit-error space of ``grads`` (float64):
    what a direct method projects there in place of the output error; None without one."""
    layers: frozenset[int] | None = None
    """The h_l whose alignment terms the audit will read (None: every one): the null's extra draws
    for the layers still unsettled. A method may give None for the others, or compute them anyway."""

    def rows(self, index: Tensor | slice) -> Batch:
        """The batch of these rows (without the graph, which holds every row)."""
        scale = None if self.scale is None else self.scale[index]
        projected = None if self.projected is None else self.projected[index]
        grads = [g[index] for g in self.grads]
        return Batch(
            self.x[index], self.y[index], self.error[index], grads, scale, projected=projected, layers=self.layers
        )

    def wanted(self) -> list[int]:
        """The indices of the layers in :attr:`layers` (every layer when it is None)."""
        return list(range(len(self.grads))) if self.layers is None else sorted(self.layers)


@dataclass(frozen=True)
class Probe:
    """Sizes read off one forward pass: number of classes, flattened width of each h_l."""

    classes: int
    widths: tuple[int, ...]
    tokens: int | None = None
    """Positions per sample when the output is per token ([N, T, V], a language model's): a
    direct feedback matrix then maps V to one position's width, shared by every position."""
    projected: int | None = None
    """The width per position of the model's ``error_point``, where a direct method takes its
    error in place of the output (TinyDFA's DFA before the output layer); None without one."""


class CreditMethod(ABC):
    """A credit-assignment method. Credits are returned as [K, n, D] (D = flattened h_l)."""

    name: str
    description: str
    needs_feedback: bool = False
    defines_cosine: bool = True
    feedback_kind: str | None = None
    """``layer``: B per layer, the shape of its weight (FA family); ``hidden``: B per
    hidden module, [classes, width] (DFA family); None: no feedback."""
    credit_scales_with_error: bool = True
    """The credit is linear in the output error e (false for DRTP, which projects the target):
    the audit computes credits for the unit-row error ê and scales magnitudes back by it."""
    projects_labels: bool = False
    """The credit projects the targets (DRTP), so it needs a head whose targets are labels or rows of
    the output's shape."""
    walks_per_draw: bool = False
    """Each feedback draw is a backward walk through the network (FA family), so more null
    draws are bounded by ``null_calibration.max_walk_draws`` rather than ``max_draws``."""
    independent_null: bool = False
    """A null draw's credit is an independent Gaussian direction for every sample (``bp``'s, which has no
    feedback to redraw): the null is then exact with no draws (:meth:`LayerAccumulator.cosine_summary`)."""

    def instrument(self, model: AdaptedModel) -> AbstractContextManager[Any]:
        """Hooks to have around the BP pass's forward when the credit walks the same graph
        again (FA family: one forward for the gradient and the credit). What it gives
        becomes :attr:`Forward.switch`; None: the method needs no graph."""
        return nullcontext()

    def null_signal(self, batch: Batch) -> Tensor | None:
        """The rows r_i ([n, C]) of which a null draw's credit at every layer is r_i · B, B one
        Gaussian matrix per layer as :meth:`draw_null_feedback` draws it: the null band then has a
        closed form (:mod:`fa_audit.measure.null_closed`) and no layer is drawn. None: drawn."""
        return None

    def credit_factors(
        self, model: AdaptedModel, batch: Batch, feedback: Feedback
    ) -> list[tuple[Tensor, Tensor]] | None:
        """The persisted credit as a product at every layer, c_l = rows · B_l: the rows [n, C] and
        the matrix [C, D] (``feedback`` holds one draw along its leading axis), so that its rank needs
        no [n, D] credit; None where it is no such product."""
        return None

    def feedback_from(self, model: AdaptedModel, stored: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The feedback the credit uses, from what the checkpoint stored (some methods
        derive it from the weights)."""
        return dict(stored) if self.needs_feedback else {}

    def feedback_shapes(self, model: AdaptedModel, probe: Probe) -> dict[str, tuple[int, ...]]:
        """The feedback tensors this method needs, by key, with their shapes."""
        return {}

    def check_stored(  # noqa: B027
        self, stored: Mapping[str, Tensor], where: object, model: AdaptedModel | None = None
    ) -> None:
        """Refuse stored feedback this method would misread or silently ignore (by default, none)."""

    def layer_keys(self, model: AdaptedModel, layer: int) -> set[str] | None:
        """Feedback keys the credit at h_layer depends on; None when not known exactly."""
        return None

    def draw_null_feedback(
        self, feedback: Feedback, draws: int, generator: torch.Generator, fixed: Feedback | None = None
    ) -> Feedback:
        """K fresh draws per matrix, same shape and same std as the persisted one, drawn in
        its dtype; ``fixed`` matrices (a missing one, NaN) are the same in every draw."""
        drawn = {
            key: torch.randn((draws, *b.shape), generator=generator, dtype=b.dtype).to(b.device) * b.std()
            for key, b in feedback.items()
        }
        return drawn | {key: b.expand(draws, *b.shape) for key, b in (fixed or {}).items()}

    @abstractmethod
    def credit(
        self, model: AdaptedModel, batch: Batch, feedback: Feedback, generator: torch.Generator
    ) -> list[Tensor | None]:
        """Credit per layer, [K, n, D], for feedback stacked along a leading draw axis K.

        ``None`` for a layer where the method defines no credit. A layer whose feedback
        is missing must come out NaN (missing matrices arrive filled with NaN).
        """

    def alignment_terms(
        self, model: AdaptedModel, batch: Batch, feedback: Feedback, generator: torch.Generator, targets: list[Tensor]
    ) -> Terms:
        """Per layer, row-wise <c_l, g_l> and |c_l|^2 ([K, n], float64) against ``targets``
        (each g_l flattened to [n, D], float64); ``None`` where :meth:`credit` is.

        All the audit needs of a credit. A method whose credit factorises may override
        this to avoid materialising c as [K, n, D].
        """
        credits = self.credit(model, batch, feedback, generator)
        return [None if c is None else dot_and_square(c, g) for c, g in zip(credits, targets, strict=True)]

    def first_terms(
        self,
        model: AdaptedModel,
        batch: Batch,
        feedback: Feedback,
        generator: torch.Generator,
        targets: list[Tensor],
        keep: int,
    ) -> tuple[Terms, list[Tensor | None] | None]:
        """:meth:`alignment_terms` of the first batch (one feedback draw). Where a draw is a backward
        walk (:attr:`walks_per_draw`), the terms come from the walk's credit itself, as
        :meth:`alignment_terms` makes them, and its first ``keep`` rows ([1, keep, D] per layer; a copy
        where the batch has more) are kept for the diagnostics, which would otherwise walk again.
        Else None: they compute their own (a product)."""
        if not self.walks_per_draw:
            return self.alignment_terms(model, batch, feedback, generator, targets), None
        terms: Terms = []
        kept: list[Tensor | None] = []
        for c, g in zip(self.credit(model, batch, feedback, generator), targets, strict=True):
            if c is None:
                terms.append(None)
                kept.append(None)
                continue
            dot, square = dot_and_square(c[0], g)
            terms.append((dot.unsqueeze(0), square.unsqueeze(0)))
            kept.append(c[:, :keep].clone() if c.shape[1] > keep else c)
        return terms, kept
