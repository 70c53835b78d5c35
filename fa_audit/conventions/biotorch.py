"""BioTorch (0.0.16): every Linear/Conv holds ``weight_backward`` (and ``bias_backward``,
unused by the credit) as a frozen Parameter. FA-family layers keep it the shape of the
weight: ``fa`` uses it as B, ``usf`` and ``brsf`` store the last B their forward drew,
``frsf`` stores only the magnitudes |M| (B = |M| · sign(W)). DFA layers keep [classes,
in_features] (a convolution [classes, C_in, kh, kw]): a backward hook replaces the layer's
input gradient by the output error projected through it, so BioTorch's ``dfa`` is audited as
the layer-wise DFA walk (``dfa_layers``), keyed by layer like the FA family."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import nn

from ..errors import InputError
from .base import Convention, Layout, Mapped, Tensor, by_layer, holds, module_of, plain_layer

WEIGHT, BIAS = ".weight_backward", ".bias_backward"
CACHE = "loss_gradient"
"""What BioTorch's DFA sets on every module at each training forward: that batch's loss gradient.
A re-save that keeps plain tensor attributes (a B set as ``self.B``) keeps it too."""
MODES = ("fa", "usf", "brsf", "frsf", "dfa")
"""The modes whose layers hold ``weight_backward``, each the method of its name."""


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

    def credit_method(self, method: str) -> str:
        """BioTorch's dfa replaces each layer's input gradient by e·B (a backward hook), so a
        state that also reaches the output past that layer (a shortcut) gets the later layers'
        projections too: the layer-wise DFA walk, not one matrix per hidden state."""
        return "dfa_layers" if method == "dfa" else method

    def plain(self, module: nn.Module) -> nn.Module | None:
        """Every mode's Linear and Conv2d (their autograd Functions, and DFA's backward hook)."""
        if isinstance(module, nn.Linear | nn.Conv2d) and holds(module, "weight_backward"):
            return plain_layer(module)
        return None

    def trains_with(self, module: nn.Module) -> str | None:
        """Every mode's layer keeps it in ``layer_config["type"]`` (fa, usf, brsf, frsf, dfa)."""
        config = getattr(module, "layer_config", None)
        kind = config.get("type") if isinstance(config, dict) and holds(module, "weight_backward") else None
        return kind if kind in MODES else None

    def map(self, found: Mapping[str, Tensor], layout: Layout, path: Path | None) -> Mapped:
        weights = {k: v for k, v in found.items() if k.endswith(WEIGHT)}
        cached = [k for k in found if k.endswith(CACHE)]
        notes = [f"{len(cached)} {CACHE} entries (a batch's error BioTorch keeps) are not used"] * bool(cached)
        if layout.kind != "layer":
            raise InputError(
                "holds BioTorch's per-layer feedback (<layer>.weight_backward), which a method with one matrix per "
                "hidden state cannot read; BioTorch's DFA is audited with --method dfa (each layer's input gets e·B)",
                path,
            )
        mapped = by_layer(weights, WEIGHT)
        return Mapped(mapped.feedback, mapped.sources, ["bias_backward entries are not used by the credit", *notes])
