"""The format-1 bundle a training script ends with (docs/checkpoints.md), written in one call."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..output_file import write_output


def save_bundle(
    path: str | Path,
    module: nn.Module,
    *,
    arch: str,
    arch_config: Mapping[str, Any],
    method: str,
    feedback: Mapping[str, Tensor] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """``module``'s weights, the adapter that rebuilds it and the feedback its method used,
    saved as one file ``fa-audit run`` reads with no other option.

    Tensors are copied out of their storages (a view would save its whole base), and the
    file is replaced atomically, so a run interrupted mid-save keeps the previous one.
    """
    bundle: dict[str, Any] = {
        "fa_audit_format": 1,
        "arch": arch,
        "arch_config": dict(arch_config),
        "method": method,
        "state_dict": {k: v.detach().clone() for k, v in module.state_dict().items()},
    }
    if meta is not None:
        bundle["meta"] = dict(meta)
    if feedback is not None:
        bundle["feedback"] = {k: v.detach().clone() for k, v in feedback.items()}
    buffer = io.BytesIO()
    torch.save(bundle, buffer)
    write_output(str(path), buffer.getvalue())
