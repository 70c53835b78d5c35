"""The saturation count's top-2 shortcut gives exactly what the exact log-space test gives on
every row, at every margin (it only skips rows whose second logit rules saturation out)."""

from __future__ import annotations

import math

import pytest
import torch

from fa_audit.measure.loss_head import log_doubt, saturated_rows, top_is


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


def test_the_top_hit_is_argmaxs_with_ties_and_nans() -> None:
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(3000, 40, generator=generator).round()  # whole numbers: many rows tie at the top
    logits[::97, 7] = float("nan")
    y = torch.randint(0, 40, (3000,), generator=generator)
    y[::3] = logits[::3].argmax(-1)  # hits, some of them on tied rows
    tied = (logits == logits.amax(-1, keepdim=True)).sum(-1) > 1
    assert int(tied.sum()) > 100 and int((logits.argmax(-1) == y).sum()) > 1000
    assert torch.equal(top_is(logits, y), logits.argmax(-1) == y)
    tokens = logits.view(100, 30, 40)
    assert torch.equal(top_is(tokens, y.view(100, 30)), tokens.argmax(-1) == y.view(100, 30))


def test_rows_at_the_shortcuts_edge_get_the_exact_answer() -> None:
    """Every other logit at log(V · threshold) from the largest, give or take a little: the rows the
    shortcut hands to the exact test and the ones it rules out are the exact test's."""
    v, threshold = 50, 1e-7
    offsets = torch.tensor([-1e-3, -1e-9, -1e-12, 0.0, 1e-12, 1e-9, 1e-3], dtype=torch.float64)
    logits = torch.zeros(len(offsets), v, dtype=torch.float64) + (math.log(v * threshold) + offsets).unsqueeze(1)
    logits[:, 0] = 0.0
    assert torch.equal(saturated_rows(logits, threshold), log_doubt(logits) < math.log(threshold))
