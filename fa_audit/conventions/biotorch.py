"""BioTorch (0.0.16): every Linear/Conv holds ``weight_backward`` (and ``bias_backward``,
unused by the credit) as a frozen Parameter. FA-family layers keep it the shape of the
weight: ``fa`` uses it as B, ``usf`` and ``brsf`` store the last B their forward drew,
``frsf`` stores only the magnitudes |M| (B = |M| · sign(W)). DFA layers keep
[classes, in_features]: the matrix that feeds the layer's *input*, so the credit at h_l
comes from the layer that reads h_l. A DFA convolution keeps [classes, C_in, kh, kw] and
sends back ``conv2d_input`` of the error broadcast over its output map: a linear map of
e, so it is read as the [classes, C·H·W] matrix that gives the same credit."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.grad import conv2d_input

from ..escape import printable
from .base import Convention, Layout, Mapped, Tensor, by_layer, holds, module_of, plain_layer

WEIGHT, BIAS = ".weight_backward", ".bias_backward"
CACHE = "loss_gradient"
"""What BioTorch's DFA sets on every module at each training forward: that batch's loss gradient.
A re-save that keeps plain tensor attributes (a B set as ``self.B``) keeps it too."""


class BioTorch(Convention):
    name = "biotorch"
    description = "BioTorch: <layer>.weight_backward (fa, usf, brsf, frsf: shape of W; dfa: [classes, in])"

    def claims(self, key: str) -> bool:
        return key.endswith((WEIGHT, BIAS, "." + CACHE)) or key == CACHE

    def method(self, found: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> str | None:
        shapes = [
            (v.shape, state.get(module_of(k, WEIGHT) + ".weight")) for k, v in found.items() if k.endswith(WEIGHT)
        ]
        if any(w is not None and b != w.shape for b, w in shapes):
            return "dfa"
        return None

    def plain(self, module: nn.Module) -> nn.Module | None:
        """Every mode's Linear and Conv2d (their autograd Functions, and DFA's backward hook)."""
        if isinstance(module, nn.Linear | nn.Conv2d) and holds(module, "weight_backward"):
            return plain_layer(module)
        return None

    def map(self, found: Mapping[str, Tensor], layout: Layout, path: Path | None) -> Mapped:
        weights = {k: v for k, v in found.items() if k.endswith(WEIGHT)}
        cached = [k for k in found if k.endswith(CACHE)]
        notes = [f"{len(cached)} {CACHE} entries (a batch's error BioTorch keeps) are not used"] * bool(cached)
        if layout.kind == "layer":
            mapped = by_layer(weights, WEIGHT)
            return Mapped(mapped.feedback, mapped.sources, ["bias_backward entries are not used by the credit", *notes])
        feedback: dict[str, Tensor] = {}
        sources: dict[str, str] = {}
        for key, value in weights.items():
            reads = layout.consumers.get(module_of(key, WEIGHT))
            if reads is None:
                maker = layout.makers.get(module_of(key, WEIGHT))
                where = (
                    f"BioTorch applies it at its layer's input, the output of {printable(maker)}: name that module "
                    f"with --hidden (hidden=) for a cosine there"
                    if maker is not None
                    else "its layer reads no hidden state itself (its input is the network input or a tensor computed "
                    "from a hidden state, such as a LayerNorm's output)"
                )
                notes.append(f"{key} is not used: {where}")
                continue
            module = layout.hidden_modules[reads]
            if reads in layout.other_paths:
                notes.append(
                    f"{key} is not read as {printable(module)}'s credit: {printable(module)} also reaches the output "
                    "past that layer (a residual shortcut), and BioTorch's backward adds the later layers' "
                    "projections carried back along it; fa-audit does not compute that sum, so it gives no cosine there"
                )
                continue
            layer = layout.layers[module_of(key, WEIGHT)]
            matrix = _conv_as_matrix(value, layer, layout.shapes[reads]) if value.dim() == 4 else value
            feedback[module], sources[module] = matrix.flatten(1), key
        return Mapped(feedback, sources, notes)


def _conv_as_matrix(b: Tensor, conv: nn.Module, shape: tuple[int, ...]) -> Tensor:
    """The matrix M with e · M = BioTorch's DFA credit at the conv's input: row c is
    conv2d_input of class c's one-hot broadcast over the output map, with the conv's
    own stride, padding, dilation and groups."""
    classes = b.shape[0]
    params = {k: getattr(conv, k) for k in ("stride", "padding", "dilation", "groups")}
    out = F.conv2d(torch.zeros(1, *shape, dtype=b.dtype), torch.zeros(classes, *b.shape[1:], dtype=b.dtype), **params)
    grad = torch.eye(classes, dtype=b.dtype)[:, :, None, None].expand(classes, classes, *out.shape[2:])
    matrix: Tensor = conv2d_input((classes, *shape), b, grad, **params)  # type: ignore[no-untyped-call]
    return matrix
