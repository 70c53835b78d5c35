"""An audit measures in IEEE float32 whatever a training script set, and leaves the script's
settings as they were: cuDNN's convolutions run in TF32 by default on a GPU, and
``torch.set_float32_matmul_precision("high")`` sends matmuls to TF32 or bfloat16."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fa_audit import audit_module
from fa_audit.precision import _backends

SEEN: list[list[str]] = []


class _Recording(nn.Sequential):
    """An MLP that records every backend's float32 precision at each forward (in SEEN: the
    audit runs copies of it too)."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> Any:
        SEEN.append([holder.fp32_precision for holder in _backends()])
        return super().forward(x)


def test_the_audit_measures_in_ieee_float32_and_gives_back_the_training_scripts_precision() -> None:
    holders = _backends()
    assert len(holders) >= 7  # torch.backends, cuda.matmul, cudnn.conv, mkldnn.matmul, ... in torch >= 2.10
    before = [holder.fp32_precision for holder in holders]
    torch.backends.cudnn.conv.fp32_precision = "tf32"  # cuDNN's default
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    script = [holder.fp32_precision for holder in holders]
    try:
        x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
        SEEN.clear()
        audit_module(_Recording(), [(x, torch.arange(64) % 3)], method="bp", hidden=["0", "1"], device="cpu")
        measured = [seen for seen in SEEN if seen != script]  # the adapter's probes run before the audit measures
        assert len(measured) > 4 and all(seen == ["ieee"] * len(holders) for seen in measured), SEEN
        assert [holder.fp32_precision for holder in holders] == script
    finally:
        for holder, value in zip(holders, before, strict=True):
            holder.fp32_precision = value
