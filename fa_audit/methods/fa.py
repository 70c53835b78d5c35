from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from model_adapters import AdaptedModel

from ..errors import InputError
from ..escape import printable
from ..measure.functional import dot_and_square, spread_terms
from .base import (
    Batch,
    CreditMethod,
    Feedback,
    Forward,
    NullDraws,
    Probe,
    Tensor,
    Terms,
    backward_start,
    draw_count,
    one_draw,
)


class FeedbackAlignment(CreditMethod):
    """The output error sent backward through the real network with every Linear's W
    replaced by its feedback B; LayerNorm, activations and residual adds keep their
    true Jacobians. The BP pass's forward is instrumented and its graph walked again,
    once per feedback draw, since BP and the draws differ only in the backward pass."""

    name = "fa"
    description = "feedback alignment; e sent backward with each Linear's or Conv's W replaced by B (same shape)"
    needs_feedback = True
    feedback_kind = "layer"
    walks_per_draw = True
    projects_error = False
    """Whether each layer sends e·B to its input (layer-wise DFA) instead of grad_out·B."""

    def feedback_shapes(self, model: AdaptedModel, probe: Probe) -> dict[str, tuple[int, ...]]:
        modules = dict(model.module.named_modules())
        return {name: tuple(modules[name].weight.shape) for name in _linear_names(model)}

    def draw_null_feedback(
        self, feedback: Feedback, draws: int, generator: torch.Generator, fixed: Feedback | None = None
    ) -> Feedback:
        """Made draw by draw as the walks use them: K copies of every weight are the model K times."""
        return NullDraws(feedback, draws, generator, fixed)

    def instrument(self, model: AdaptedModel) -> AbstractContextManager[_Switch]:
        return _feedback_backward(model, _Switch())

    def check_stored(self, stored: Mapping[str, Tensor], where: object, model: AdaptedModel | None = None) -> None:
        """A B with no negative entry anywhere is frSF's stored magnitudes |M|, not a B (a
        random or trained B has both signs): read as B it would give every layer a wrong Γ."""
        if self.needs_feedback and stored and all(bool((b >= 0).all()) for b in stored.values()):
            raise InputError(
                f"holds feedback with no negative entry, which is frSF's stored magnitudes |M| rather than a B for "
                f"--method {self.name}; pass --method frsf (B = |M| · sign(W))",
                where if where is None else str(where),
            )

    def credit(
        self, model: AdaptedModel, batch: Batch, feedback: Feedback, generator: torch.Generator
    ) -> list[Tensor | None]:
        walks = list(self._walks(model, batch, feedback))
        n = batch.x.shape[0]
        return [torch.stack([w[layer] for w in walks]).reshape(len(walks), n, -1) for layer in range(len(walks[0]))]

    def alignment_terms(
        self, model: AdaptedModel, batch: Batch, feedback: Feedback, generator: torch.Generator, targets: list[Tensor]
    ) -> Terms:
        """Each walk reduced against every g_l as it comes, so that the credit of all draws,
        [K, n, D] per layer (7 GB for 20 draws of a ResNet-18 on 256 images), is never held;
        into [K, n] sums made before the first walk: small tensors kept from walk to walk
        pinned glibc's heap between its large temporaries (BioTorch's LeNet: 1.04 GB peak in
        some runs, 0.69 GB in others)."""
        shape = (draw_count(feedback), batch.x.shape[0])
        wanted = batch.wanted()
        dots = {i: torch.empty(shape, dtype=torch.float64, device=targets[i].device) for i in wanted}
        squares = {i: torch.empty_like(dot) for i, dot in dots.items()}
        null = {i: targets[i].float() for i in wanted} if shape[0] > 1 else None  # null draws: float32 (spread_terms)
        for index, walk in enumerate(self._walks(model, batch, feedback, wanted)):
            for i, c in zip(wanted, walk, strict=True):
                terms = (
                    dot_and_square(c.flatten(1), targets[i]) if null is None else spread_terms(c.flatten(1), null[i])
                )
                dots[i][index], squares[i][index] = terms
        return [(dots[i], squares[i]) if i in dots else None for i in range(len(targets))]

    def _walks(
        self, model: AdaptedModel, batch: Batch, feedback: Feedback, wanted: list[int] | None = None
    ) -> Iterator[tuple[Tensor, ...]]:
        """One backward walk per draw of ``feedback``: the credit of every h_l (of those
        ``wanted``: the walk then stops at the shallowest) for the unit-row error ê (no float32
        underflow: see Batch.error). Walks ``batch.forward`` (freed after the last draw), else a
        forward of its own."""
        forward = batch.forward or self._forward(model, batch.x)
        inputs = forward.hidden if wanted is None else [forward.hidden[i] for i in wanted]
        switch = forward.switch
        assert isinstance(switch, _Switch)  # what this method's instrument() gave
        draws = draw_count(feedback)
        try:
            for index in range(draws):
                switch.select(one_draw(feedback, index), batch.error if self.projects_error else None)
                with torch.enable_grad():  # the audit calls the credit under no_grad; the product joins the graph
                    start = backward_start(forward.logits, batch.error)  # as the BP gradient's
                yield torch.autograd.grad(start, inputs, retain_graph=index < draws - 1)
        finally:
            switch.select(None)

    def _forward(self, model: AdaptedModel, x: Tensor) -> Forward:
        with torch.enable_grad(), self.instrument(model) as switch:
            logits, hidden = model.forward_hidden(x)
            return Forward(logits, hidden, switch)


class KolenPollack(FeedbackAlignment):
    name = "kp"
    description = "Kolen-Pollack; as fa, with the trained B the checkpoint persists"


class BatchRandomSignFeedback(FeedbackAlignment):
    name = "brsf"
    description = "BioTorch brSF; as fa, with the one B draw the checkpoint stores (B is redrawn every forward)"


class FixedRandomSignFeedback(FeedbackAlignment):
    name = "frsf"
    description = "BioTorch frSF; B = |M| · sign(W), the checkpoint storing the magnitudes |M|"

    def check_stored(self, stored: Mapping[str, Tensor], where: object, model: AdaptedModel | None = None) -> None:
        """frSF stores magnitudes: a negative entry means a signed B (fa, kp, brsf), whose
        signs |B| · sign(W) would silently replace by W's own."""
        negative = next((k for k, m in stored.items() if bool((m < 0).any())), None)
        if negative is not None:
            raise InputError(
                f"holds feedback with negative entries ({printable(negative)}), which frSF's stored magnitudes |M| "
                "cannot have: it is a signed B; pass the method that trained it (fa, kp or brsf)",
                where if where is None else str(where),
            )

    def feedback_from(self, model: AdaptedModel, stored: Mapping[str, Tensor]) -> dict[str, Tensor]:
        weights = _weights(model)
        return {k: m.abs() * torch.sign(weights[k]).to(m) for k, m in stored.items() if k in weights}


class SignSymmetry(FeedbackAlignment):
    """B_l = s_l · sign(W_l) with the sign-symmetry code's per-layer scale s_l (Xiao et al.: a
    Linear's 1/√in, a convolution's √(2 / (k_h k_w C_out))). In a chain of layers the scales
    cancel in every cosine; where paths meet (a residual add) they weigh one path against the
    other, so a scale-free sign(W) gives another credit there."""

    name = "sign_symmetry"
    description = "sign symmetry; as fa with B = scale · sign(W) (the sign-symmetry code's scale per layer)"
    needs_feedback = False

    def feedback_from(self, model: AdaptedModel, stored: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k: self.scale(w, stored.get(k)) * torch.sign(w) for k, w in _weights(model).items()}

    def scale(self, weight: Tensor, stored: Tensor | None) -> float:
        """s_l for the layer of weight ``weight`` (``stored``: the B the file keeps for it, if any)."""
        if weight.dim() == 2:
            return 1.0 / math.sqrt(weight.shape[1])
        return math.sqrt(2.0 / (math.prod(weight.shape[2:]) * weight.shape[0]))

    def check_stored(self, stored: Mapping[str, Tensor], where: object, model: AdaptedModel | None = None) -> None:
        """B = sign(W) is derived, so stored feedback is ignored, and a file that stores some was
        trained with it: magnitudes |M| (no negative entry) are the sign-symmetry code's
        sign_symmetry_random_magnitude, B = |M| · sign(W), which is frsf; a signed B whose signs are
        not W's is feedback alignment's. A stored sign(W) (BioTorch's uSF keeps scale · sign(W)) is fine."""
        if not stored:
            return
        at = where if where is None else str(where)
        if all(bool((b >= 0).all()) for b in stored.values()):
            raise InputError(
                f"holds feedback magnitudes (no negative entry), which --method {self.name} would ignore: they are "
                "sign_symmetry_random_magnitude's |M| (B = |M| · sign(W)); pass --method frsf",
                at,
            )
        weights = {} if model is None else _weights(model)
        for key, b in stored.items():
            w = weights.get(key)
            if w is None or w.shape != b.shape:
                continue
            live = w != 0
            agree = (
                float((torch.sign(b.to(w))[live] == torch.sign(w)[live]).double().mean()) if bool(live.any()) else 1.0
            )
            if agree < 0.9:
                raise InputError(
                    f"holds a signed feedback B for {printable(key)} whose signs agree with W's on only "
                    f"{100 * agree:.0f} % of entries: a feedback-alignment B, which --method {self.name} would ignore; "
                    "pass --method fa (or kp, brsf)",
                    at,
                )


class UniformSignFeedback(SignSymmetry):
    """BioTorch's uSF: B_l = s_l · sign(W_l), s_l the layer's initialisation scale. BioTorch
    keeps the last B it used as ``weight_backward``: s_l is its magnitude; without it, the
    scale of BioTorch's default (Xavier) initialisation, √(2 / (fan_in + fan_out))."""

    name = "usf"
    description = "BioTorch uSF; B = scale · sign(W), the scale BioTorch's stored B has (else its Xavier default)"

    def scale(self, weight: Tensor, stored: Tensor | None) -> float:
        if stored is not None and bool((stored != 0).any()):
            return float(stored.abs().max())
        receptive = math.prod(weight.shape[2:])
        return math.sqrt(2.0 / (weight.shape[1] * receptive + weight.shape[0] * receptive))


class LayerwiseDirectFeedback(FeedbackAlignment):
    """DFA as BioTorch's layers do it: every Linear's or Conv's input gradient is replaced by
    the output error projected through its own B ([classes, in], a convolution's [classes,
    C_in, k...]), nothing goes through W, and BatchNorm, activations, pooling and residual adds
    keep their true Jacobians. The credit at h_l is the gradient that arrives there: the
    projection of the layer reading h_l, plus, along a shortcut, the later layers' carried back."""

    name = "dfa_layers"
    description = "DFA applied at each layer's input (BioTorch's dfa): e·B_layer, shortcuts summed by the true backward"
    projects_error = True

    def feedback_shapes(self, model: AdaptedModel, probe: Probe) -> dict[str, tuple[int, ...]]:
        shapes = super().feedback_shapes(model, probe)
        return {name: (probe.classes, *shape[1:]) for name, shape in shapes.items()}

    def check_stored(self, stored: Mapping[str, Tensor], where: object, model: AdaptedModel | None = None) -> None:
        """A DFA B is random of both signs, never a magnitude: nothing to tell apart here."""


def _weights(model: AdaptedModel) -> dict[str, Tensor]:
    modules = dict(model.module.named_modules())
    return {name: modules[name].weight.detach() for name in _linear_names(model)}


def _linear_names(model: AdaptedModel) -> list[str]:
    """The layers whose W feedback replaces: Linear, Conv1d, Conv2d, but those trained with backprop."""
    return model.feedback_layers()


class _Switch:
    """Which Jacobian the backward walk now in flight takes at every Linear and Conv: the
    layer's own (``draw`` None: a BP walk), or its B in ``draw``. The forward's autograd
    Functions hold it, so a walk reads it when it reaches each layer."""

    def __init__(self) -> None:
        self.draw: Mapping[str, Tensor] | None = None
        self.error: Tensor | None = None

    def select(self, draw: Mapping[str, Tensor] | None, error: Tensor | None = None) -> None:
        """``error``: the output error a layer-wise DFA walk projects at every layer's input."""
        self.draw, self.error = draw, error


class _FeedbackLinearGrad(torch.autograd.Function):
    """Identity on the layer's true output. A BP walk sends the gradient down the true
    path (``out``'s own graph, so the gradient is autograd's, bit for bit); an FA walk
    sends it to the layer's input through B instead of W and nothing down the true path:
    a Linear sends grad_out @ B, a convolution the transposed convolution with B and its
    own stride, padding, dilation and groups."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, out: Tensor, name: str, switch: _Switch, layer: nn.Module) -> Tensor:
        ctx.save_for_backward(x)
        ctx.name, ctx.switch, ctx.layer = name, switch, layer
        return out.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        switch: _Switch = ctx.switch
        if switch.draw is None:
            return None, grad_out, None, None, None
        if not ctx.needs_input_grad[0]:  # the network's input: nothing below it to send credit to
            return None, None, None, None, None
        (x,) = ctx.saved_tensors
        b_k = switch.draw[ctx.name]
        if switch.error is not None:
            return _projected_error(ctx.name, ctx.layer, x, b_k, switch.error, grad_out), None, None, None, None
        if isinstance(ctx.layer, nn.Linear):
            return grad_out @ b_k, None, None, None, None
        return _conv_input_grad(ctx.layer, x, b_k, grad_out), None, None, None, None


def _conv_input_grad(layer: nn.Conv1d | nn.Conv2d, x: Tensor, kernel: Tensor, grad_out: Tensor) -> Tensor:
    """The convolution's own input-gradient rule with ``kernel`` in place of W: its transposed
    convolution where the padding is plain numbers of zeros, else autograd through the layer's
    own forward. The transposed convolution gives torch.nn.grad's conv2d_input bit for bit, at
    the same speed where the stride is 1 and 2–6× faster for a strided 1 × 1 or a depthwise
    kernel (a ResNet's shortcuts, a MobileNet's blocks)."""
    transposed = next((rule for cls, rule in _CONV_TRANSPOSED.items() if isinstance(layer, cls)), None)
    if transposed is not None and layer.padding_mode == "zeros" and not isinstance(layer.padding, str):
        grad_in: Tensor = transposed(
            grad_out,
            kernel,
            stride=layer.stride,
            padding=layer.padding,
            output_padding=_output_padding(layer, x.shape, grad_out.shape),
            groups=layer.groups,
            dilation=layer.dilation,
        )
        return grad_in
    with torch.enable_grad():
        probe = x.detach().requires_grad_(x.is_floating_point())
        (grad_in,) = torch.autograd.grad(layer._conv_forward(probe, kernel, None), probe, grad_out)
    return grad_in


def _output_padding(layer: nn.Conv1d | nn.Conv2d, x_shape: torch.Size, out_shape: torch.Size) -> list[int]:
    """The input positions past the last window (a stride that does not divide the padded input):
    the transposed convolution must give them back, as zeros."""
    spatial = range(len(out_shape) - 2)
    stride, padding, dilation = layer.stride, cast(tuple[int, ...], layer.padding), layer.dilation
    return [
        x_shape[2 + i]
        - ((out_shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (layer.kernel_size[i] - 1) + 1)
        for i in spatial
    ]


_CONV_TRANSPOSED: dict[type[nn.Module], Any] = {nn.Conv1d: F.conv_transpose1d, nn.Conv2d: F.conv_transpose2d}


def _projected_error(name: str, layer: nn.Module, x: Tensor, b: Tensor, error: Tensor, grad_out: Tensor) -> Tensor:
    """BioTorch's DFA at a layer's input, whatever arrives from above: e·B for a Linear; for a
    convolution, its input gradient with B [classes, C_in, k...] as the kernel of the error
    broadcast over the output map (BioTorch's conv2d_input of the repeated loss gradient)."""
    e = error.to(x.dtype)
    if isinstance(layer, nn.Linear):
        if x.dim() != 2 or e.dim() != 2:
            raise InputError(
                f"layer-wise DFA sends one error row per sample to a Linear's input, but {printable(name)} reads "
                f"{list(x.shape)} (positions per sample): BioTorch's DFA has no per-position form, and cannot train "
                "this layout either"
            )
        return e @ b
    assert isinstance(layer, nn.Conv1d | nn.Conv2d)  # the layers the walk instruments
    spread = e.view(*e.shape, *[1] * (grad_out.dim() - 2)).expand(*e.shape, *grad_out.shape[2:])
    return _conv_input_grad(layer, x, b, spread)


@contextmanager
def _feedback_backward(model: AdaptedModel, switch: _Switch) -> Iterator[_Switch]:
    def hook(name: str) -> Any:
        def swap(module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
            swapped: Tensor = _FeedbackLinearGrad.apply(inputs[0], out, name, switch, module)  # type: ignore[no-untyped-call]
            return swapped

        return swap

    modules = dict(model.module.named_modules())
    handles = [modules[name].register_forward_hook(hook(name)) for name in _linear_names(model)]
    try:
        yield switch
    finally:
        for handle in handles:
            handle.remove()
