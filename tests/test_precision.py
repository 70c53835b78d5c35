"""An audit measures in IEEE float32 whatever a training script set, and leaves the script's
settings as they were: cuDNN's convolutions run in TF32 by default on a GPU, and
``torch.backends.cuda.matmul.allow_tf32 = True`` or ``torch.set_float32_matmul_precision("high")``
send matmuls to TF32 or bfloat16. PyTorch keeps older switches beside the newer ``fp32_precision``
ones and raises where an op reads both and they disagree, so both are set in step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from fa_audit import audit_module
from fa_audit.measure.precision import OLDER, _backends

SEEN: list[tuple[list[str], list[Any]]] = []


def _older_values() -> list[Any]:
    """Each older switch's value, or the error PyTorch raises reading it."""
    values = []
    for read, _, _ in OLDER:
        try:
            values.append(read())
        except RuntimeError as exc:
            values.append(f"raises: {str(exc)[:60]}")
    return values


class _Recording(nn.Sequential):
    """An MLP that records every switch at each forward (in SEEN: the audit runs copies of it)."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> Any:
        SEEN.append(([holder.fp32_precision for holder in _backends()], _older_values()))
        return super().forward(x)


@pytest.fixture
def restored() -> Iterator[None]:
    """The process's switches as they were, whatever a test sets."""
    holders = _backends()
    newer = [holder.fp32_precision for holder in holders]
    older = [(write, read()) for read, write, _ in OLDER]
    yield
    for write, value in older:
        write(value)
    for holder, value in zip(holders, newer, strict=True):
        holder.fp32_precision = value


def _set_newer() -> None:
    torch.backends.cudnn.conv.fp32_precision = "tf32"  # cuDNN's default
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"


def _set_older() -> None:
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("medium")


@pytest.mark.parametrize("script", [_set_newer, _set_older], ids=["fp32_precision", "allow_tf32"])
def test_the_audit_measures_in_ieee_float32_and_gives_back_the_training_scripts_precision(
    script: Callable[[], None], restored: None
) -> None:
    holders = _backends()
    assert len(holders) >= 7  # torch.backends, cuda.matmul, cudnn.conv, mkldnn.matmul, ... in torch >= 2.10
    script()
    before = ([holder.fp32_precision for holder in holders], _older_values())
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    SEEN.clear()
    audit_module(_Recording(), [(x, torch.arange(64) % 3)], method="bp", hidden=["0", "1"], device="cpu")
    measured = [seen for seen in SEEN if seen != before]  # the adapter's probes run before the audit measures
    ieee = (["ieee"] * len(holders), ["highest", False])
    assert len(measured) > 4 and all(seen == ieee for seen in measured), SEEN[-1]
    assert ([holder.fp32_precision for holder in holders], _older_values()) == before
