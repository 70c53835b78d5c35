"""Float32 as IEEE float32 while an audit measures. PyTorch lets float32 convolutions and
matrix products run at lower precision: cuDNN convolutions in TF32 by default (a 10-bit
mantissa, errors of order 1e-3), matmuls in TF32 or bfloat16 after a training script's
``torch.set_float32_matmul_precision("high")``. A gradient computed so differs from the
float32 one by more than any cosine the report prints, so every backend is set to "ieee"
for the audit and given back its setting after it (a training loop's own settings stand)."""

from __future__ import annotations

from collections.abc import Iterator
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


@contextmanager
def ieee_float32() -> Iterator[None]:
    """Every float32 convolution, matmul and RNN in IEEE float32 inside, as before after."""
    holders = _backends()
    saved = [holder.fp32_precision for holder in holders]
    try:
        for holder in holders:
            holder.fp32_precision = "ieee"
        yield
    finally:
        for holder, value in zip(holders, saved, strict=True):
            holder.fp32_precision = value
