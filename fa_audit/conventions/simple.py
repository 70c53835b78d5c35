"""Conventions that are one entry name each: a frozen B the shape of the weight beside
it (the sign-symmetry code's buffer, the common ``weight_fa``), or a DFA matrix in a
module named after the layer it follows (the DKP gist)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .base import Convention, Layout, Mapped, Tensor, by_hidden, by_layer


class LayerFeedback(Convention):
    """``<layer><suffix>``: B of ``<layer>``, the shape of its weight."""

    def __init__(self, name: str, suffix: str, description: str) -> None:
        self.name, self.suffix, self.description = name, suffix, description

    def claims(self, key: str) -> bool:
        return key.endswith(self.suffix)

    def map(self, found: Mapping[str, Tensor], layout: Layout, path: Path | None) -> Mapped:
        return by_layer(found, self.suffix)


class DKP(Convention):
    name = "dkp"
    description = "DKP gist: <module>_dfa.backward_weights, [classes, width] for the output of <module> (dfa, dkp)"

    def claims(self, key: str) -> bool:
        return key.endswith("_dfa.backward_weights")

    def method(self, found: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> str | None:
        return "dfa"  # DKP trains B, but its credit at the checkpoint is DFA's with that B

    def map(self, found: Mapping[str, Tensor], layout: Layout, path: Path | None) -> Mapped:
        return by_hidden(found, ".backward_weights", layout, path, owner="_dfa")


SIGN_SYMMETRY = LayerFeedback(
    "sign_symmetry_code", ".feedback_weight", "sign-symmetry code (Xiao et al.): <layer>.feedback_weight, shape of W"
)
WEIGHT_FA = LayerFeedback("weight_fa", ".weight_fa", "common FA layer code: <layer>.weight_fa, shape of W (fa, kp)")
