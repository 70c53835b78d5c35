"""The saturation count's top-2 shortcut gives exactly what the exact log-space test gives on
every row, at every margin (it only skips rows whose second logit rules saturation out)."""

from __future__ import annotations

import math

import pytest
import torch

from fa_audit.measure.loss_head import log_doubt, saturated_rows


@pytest.mark.parametrize("spread", [0.1, 3.0, 10.0, 30.0, 100.0])
def test_the_shortcut_agrees_with_the_exact_test(spread: float) -> None:
    generator = torch.Generator().manual_seed(int(spread * 10))
    logits = torch.randn(5000, 50, generator=generator, dtype=torch.float64) * spread
    logits[::7, 3] += 40.0  # a margin of 40 on some rows: saturated whatever the rest does
    logits[::11, 5] = logits[::11].amax(1) + 16.1 + math.log(50)  # right at the shortcut's edge
    exact = log_doubt(logits) < math.log(1e-7)
    assert torch.equal(saturated_rows(logits, 1e-7), exact)
    assert 0 < int(exact.sum()) < len(exact) or spread >= 100.0


def test_one_class_is_saturated_as_the_exact_test_says() -> None:
    logits = torch.randn(4, 1, dtype=torch.float64)
    assert torch.equal(saturated_rows(logits, 1e-7), log_doubt(logits) < math.log(1e-7))
