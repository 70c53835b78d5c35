"""TinyDFA (LightOn): one matrix [classes, S] drawn at the first training forward and
kept as a plain attribute (``dfa.feedback_matrix``), never in the state dict. The
credit at a feedback point of size w is e · M[:, :w] / √S (``normalization=True``). Live,
a ``DFALayer`` detaches its output (the graph is cut there) and the ``DFA`` module's
autograd Function sends the projection to every feedback point: both are the identity
in the forward pass, and the matrix is read off the ``DFA`` module.

The DFA module projects the gradient at its own input: the output error when it wraps the
output layer (TinyDFA's MNIST example), the gradient below the output layer when it sits before
it (its transformer LM, ``dfa_after_vocab=False``). Feedback points a model keeps in plain lists
(the transformer's ``layer.dfas``) are out of reach of the twin's walk over submodules: they are
switched to ``passthrough``, TinyDFA's own switch for its backprop reference
(``AlignmentMeasurement``), and made to keep none of the inputs they see."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from .base import Convention, Layout, Mapped, Passthrough, holds

Tensor = torch.Tensor

HOW_TO_SAVE = "save it with torch.save(dfa.feedback_matrix, 'feedback.pt') and pass --feedback feedback.pt"


def split_matrix(
    matrix: Tensor, hidden_modules: tuple[str, ...], widths: tuple[int, ...], path: Path
) -> dict[str, Tensor]:
    """The DFA feedback of each hidden module from TinyDFA's one matrix."""
    if matrix.dim() != 2:
        raise InputError(f"holds a tensor of shape {list(matrix.shape)}; TinyDFA's feedback_matrix is 2-D", path)
    size = matrix.shape[1]
    if max(widths) > size:
        raise InputError(f"holds a [classes, {size}] matrix, narrower than a hidden state of {max(widths)}", path)
    return {name: matrix[:, :w] / math.sqrt(size) for name, w in zip(hidden_modules, widths, strict=True)}


class TinyDFA(Convention):
    name = "tinydfa"
    description = "TinyDFA: one [classes, S] matrix on the DFA module, never in the state dict (--convention tinydfa)"

    def claims(self, key: str) -> bool:
        return False  # its matrix is never in the state dict

    def map(self, found: Mapping[str, Tensor], layout: Layout, path: Path | None) -> Mapped:
        return Mapped({}, {}, [])

    def plain(self, module: nn.Module) -> nn.Module | None:
        if self.takes_error(module):
            for point in module.dfa_layers:  # type: ignore[union-attr]
                if hasattr(point, "passthrough"):
                    point.passthrough = True
                    # No handling mode: the twin's points keep no input of a pass (MINIBATCH appends each
                    # batch's, REDUCE sums them on the DFA module: graphs held across the whole audit).
                    point.feedback_points_handling = None
            return Passthrough()
        is_point = hasattr(module, "feedback_registrar") and hasattr(module, "feedback_points")
        return Passthrough() if is_point else None

    def takes_error(self, module: nn.Module) -> bool:
        return isinstance(getattr(module, "dfa_layers", None), list | tuple | nn.ModuleList)

    def held_feedback(self, module: nn.Module) -> Tensor | None:
        if not (hasattr(module, "dfa_layers") and holds(module, "feedback_matrix")):
            return None
        matrix: Tensor = module.feedback_matrix  # type: ignore[assignment]
        return matrix
