"""Conventions that are one entry name each: a frozen B the shape of the weight beside
it (the sign-symmetry code's buffer, the common ``weight_fa``), or a DFA matrix in a
module named after the layer it follows (the DKP gist). Live, each layer's own autograd
Function sends the error back through B; the plain form is the Linear or Conv it computes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import nn

from .base import (
    Convention,
    Layout,
    Mapped,
    Passthrough,
    Tensor,
    by_hidden,
    by_layer,
    holds,
    module_of,
    plain_layer,
)


class LayerFeedback(Convention):
    """``<layer><suffix>``: B of ``<layer>``, the shape of its weight."""

    def __init__(self, name: str, suffix: str, description: str) -> None:
        self.name, self.suffix, self.description = name, suffix, description

    def claims(self, key: str) -> bool:
        return key.endswith(self.suffix)

    def map(self, found: Mapping[str, Tensor], layout: Layout, path: Path | None) -> Mapped:
        return by_layer(found, self.suffix)

    def plain(self, module: nn.Module) -> nn.Module | None:
        attribute = self.suffix.removeprefix(".")  # the sign-symmetry code keeps it None for sign_symmetry
        return plain_layer(module) if hasattr(module, attribute) and holds(module, "weight") else None


class NamedAttribute(LayerFeedback):
    """A user's own layers, each keeping its feedback as the attribute the user names
    (``--feedback-attr B``): B of a layer (the shape of its weight) for the FA family, the matrix
    of a hidden module ([outputs, width]) for the DFA family. Live, a layer holding it with a
    weight becomes the Linear or Conv it computes, one without (a hook) the identity; each twin's
    forward is checked against the layer's (:func:`~fa_audit.conventions.twin.check_twins`)."""

    def __init__(self, attribute: str) -> None:
        super().__init__(
            f"{ATTRIBUTE}{attribute}", f".{attribute}", f"your own layers' attribute {attribute} (--feedback-attr)"
        )
        self.attribute = attribute

    def map(self, found: Mapping[str, Tensor], layout: Layout, path: Path | None) -> Mapped:
        if layout.kind == "hidden":
            return by_hidden(found, self.suffix, layout, path)
        return by_layer(found, self.suffix)

    def plain(self, module: nn.Module) -> nn.Module | None:
        if not holds(module, self.attribute):
            return None
        return plain_layer(module) if holds(module, "weight") else Passthrough()


ATTRIBUTE = "attribute:"
"""The name prefix of a :class:`NamedAttribute` convention (``attribute:B``)."""


class DKP(Convention):
    name = "dkp"
    description = (
        "DKP gist: <module>_dfa.backward_weights, [classes, width] at the output of its <module>_dfa hook (dfa, dkp)"
    )

    credit_at_module = True

    def claims(self, key: str) -> bool:
        return key.endswith("_dfa.backward_weights")

    def method(self, found: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> str | None:
        return "dfa"  # DKP trains B, but its credit at the checkpoint is DFA's with that B

    def map(self, found: Mapping[str, Tensor], layout: Layout, path: Path | None) -> Mapped:
        if all(module_of(k, ".backward_weights") in layout.hidden_modules for k in found):
            return by_hidden(found, ".backward_weights", layout, path)
        mapped = by_hidden(found, ".backward_weights", layout, path, owner="_dfa")
        mapped.notes.append(
            "the DKP matrices are taken at the outputs of the modules their hooks are named after: this model has no "
            "<module>_dfa hooks to say where the gist applied them (after BatchNorm and ReLU); audit the class that "
            "has them (--arch module:) for the exact place"
        )
        return mapped

    def plain(self, module: nn.Module) -> nn.Module | None:
        """The DFA module after a layer: the identity forward, B in its backward."""
        return Passthrough() if holds(module, "backward_weights") and not holds(module, "weight") else None


ALGOS = {
    "sign_symmetry": "sign_symmetry",
    "sign_symmetry_random_magnitude": "frsf",
    "feedback_alignment": "fa",
    "feedback_alignment_signed_init": "fa",
    "sham": "bp",
}
"""The sign-symmetry code's ``algo`` and the method that audits it (sham's B is W itself: backprop)."""


class SignSymmetryCode(LayerFeedback):
    """The sign-symmetry code's layers: ``feedback_weight`` (None for sign_symmetry and sham), and
    live, the ``algo`` each layer trains with."""

    def trains_with(self, module: nn.Module) -> str | None:
        algo = getattr(module, "algo", None)
        return ALGOS.get(algo) if isinstance(algo, str) and hasattr(module, "feedback_weight") else None


SIGN_SYMMETRY = SignSymmetryCode(
    "sign_symmetry_code", ".feedback_weight", "sign-symmetry code (Xiao et al.): <layer>.feedback_weight, shape of W"
)
WEIGHT_FA = LayerFeedback("weight_fa", ".weight_fa", "common FA layer code: <layer>.weight_fa, shape of W (fa, kp)")
