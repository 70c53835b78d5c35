"""Float32 as IEEE float32 while an audit measures. PyTorch lets float32 convolutions and
matrix products run at lower precision: cuDNN convolutions in TF32 by default (a 10-bit
mantissa, errors of order 1e-3), matmuls in TF32 or BF16 after a training script's
``torch.set_float32_matmul_precision("high")``. A gradient computed so differs from the
float32 one by more than any cosine the report prints, so every backend is set to "ieee"
for the audit and given back its setting after it (a training loop's own settings stand)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

BACKENDS = ("", "cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn", "mkldnn", "mkldnn.matmul", "mkldnn.conv",
            "mkldnn.rnn")  # fmt: skip
"""Every holder of an ``fp32_precision`` (torch.backends itself first: the others inherit its
value where theirs is "none")."""


def _backends() -> list[Any]:
    found = []
    for path in BACKENDS:
        holder: Any = torch.backends
        for part in filter(None, path.split(".")):
            holder = getattr(holder, part, None)
        if holder is not None and hasattr(holder, "fp32_precision"):
            found.append(holder)
    return found


def _set_matmul(value: Any) -> None:
    torch.set_float32_matmul_precision(value)


def _set_cudnn(value: Any) -> None:
    torch.backends.cudnn.allow_tf32 = value


OLDER: tuple[tuple[Callable[[], Any], Callable[[Any], None], Any], ...] = (
    (torch.get_float32_matmul_precision, _set_matmul, "highest"),
    (lambda: torch.backends.cudnn.allow_tf32, _set_cudnn, False),
)
"""PyTorch's older switches, (read, set, IEEE's value): it checks them against the newer ones
wherever an op still reads them, and raises where they disagree."""


def _older() -> list[tuple[Callable[[Any], None], Any, Any]]:
    """(set, the user's value, IEEE's value) of each older switch that can be read: one the
    user's own settings already put at odds with the newer ones raises when read, and is left."""
    found = []
    for read, write, ieee in OLDER:
        try:
            found.append((write, read(), ieee))
        except RuntimeError:
            continue
    return found


@contextmanager
def ieee_float32() -> Iterator[None]:
    """Every float32 convolution, matmul and RNN in IEEE float32 inside, as before after.
    The older switches are set first, in step with the newer ones (set alone, the newer ones
    would disagree with a script's ``allow_tf32 = True``), and given back first, before the
    newer ones, which setting them overwrites."""
    holders = _backends()
    saved = [holder.fp32_precision for holder in holders]
    older = _older()
    try:
        for write, _, ieee in older:
            write(ieee)
        for holder in holders:
            holder.fp32_precision = "ieee"
        yield
    finally:
        for write, value, _ in older:
            write(value)
        for holder, value in zip(holders, saved, strict=True):
            holder.fp32_precision = value
