"""TinyDFA (LightOn): one matrix [classes, S] drawn at the first training forward and
kept as a plain attribute (``dfa.feedback_matrix``), never in the state dict. The
credit at a feedback point of size w is e · M[:, :w] / √S (``normalization=True``)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import InputError

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
