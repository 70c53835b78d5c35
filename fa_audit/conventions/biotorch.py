"""BioTorch (0.0.16): every Linear/Conv holds ``weight_backward`` (and ``bias_backward``,
unused by the credit) as a frozen Parameter. FA-family layers keep it the shape of the
weight: ``fa`` uses it as B, ``usf`` and ``brsf`` store the last B their forward drew,
``frsf`` stores only the magnitudes |M| (B = |M| · sign(W)). DFA layers keep
[classes, in_features]: the matrix that feeds the layer's *input*, so the credit at h_l
comes from the layer that reads h_l."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import InputError
from .base import Convention, Layout, Mapped, Tensor, by_layer, module_of

WEIGHT, BIAS = ".weight_backward", ".bias_backward"


class BioTorch(Convention):
    name = "biotorch"
    description = "BioTorch: <layer>.weight_backward (fa, usf, brsf, frsf: shape of W; dfa: [classes, in])"

    def claims(self, key: str) -> bool:
        return key.endswith((WEIGHT, BIAS))

    def method(self, found: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> str | None:
        shapes = [
            (v.shape, state.get(module_of(k, WEIGHT) + ".weight")) for k, v in found.items() if k.endswith(WEIGHT)
        ]
        if any(w is not None and b != w.shape for b, w in shapes):
            return "dfa"
        return None

    def check_method(self, method: str, found: Mapping[str, Tensor], path: Path | None) -> None:
        weights = [v for k, v in found.items() if k.endswith(WEIGHT)]
        if method in {"fa", "kp"} and weights and all(bool((w >= 0).all()) for w in weights):
            raise InputError(
                "holds BioTorch feedback with no negative entry: that is frSF's stored magnitudes |M|, "
                "not a B; pass --method frsf (B = |M| · sign(W))",
                path,
            )

    def map(self, found: Mapping[str, Tensor], layout: Layout, path: Path | None) -> Mapped:
        weights = {k: v for k, v in found.items() if k.endswith(WEIGHT)}
        if layout.kind == "layer":
            mapped = by_layer(weights, WEIGHT)
            return Mapped(mapped.feedback, mapped.sources, ["bias_backward entries are not used by the credit"])
        feedback: dict[str, Tensor] = {}
        sources: dict[str, str] = {}
        notes = []
        for key, value in weights.items():
            reads = layout.consumers.get(module_of(key, WEIGHT))
            if reads is None:
                notes.append(f"{key} feeds a layer whose input is not a hidden state (the network input)")
                continue
            module = layout.hidden_modules[reads]
            feedback[module], sources[module] = value.flatten(1), key
        return Mapped(feedback, sources, notes)
