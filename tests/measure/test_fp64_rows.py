"""The float64 agreement on chosen rows: an even spread of the first batch, whose mean
stands for the batch's, and its most confident samples, where float32's rounding of the
gradient shows first (measured on vit_mini_dfa.pt: its 8 worst rows at h1 are among the
9 most confident of 256), so that the minimum sees them for 32 float64 rows, not 256."""

from __future__ import annotations

import pytest
import torch

from fa_audit.adapt import build_model, order_hidden
from fa_audit.adapt.fit_keys import fit_bundle
from fa_audit.loading import load_bundle, load_eval_data
from fa_audit.loss_heads.cross_entropy import CROSS_ENTROPY
from fa_audit.measure.float64_model import in_float64
from fa_audit.measure.functional import row_cosines
from fa_audit.measure.run import FP64_ROWS, agreement, forward_backward, fp64_agreement, fp64_rows

from ..conftest import SAMPLES


def test_the_rows_are_a_spread_and_the_most_confident() -> None:
    logits = torch.zeros(256, 10, dtype=torch.float64)
    # The three most confident rows, none of them spread.
    logits[[7, 100, 201], 3] = torch.tensor([30.0, 40.0, 50.0], dtype=torch.float64)
    logits[0, 3] = 60.0  # the most confident of all, and a spread row already
    rows, spread = fp64_rows(logits, torch.zeros(256, dtype=torch.long))
    assert spread == FP64_ROWS and len(rows) == 2 * FP64_ROWS == len(set(rows.tolist()))
    assert rows[:spread].tolist() == [i * 256 // FP64_ROWS for i in range(FP64_ROWS)]
    assert rows[spread : spread + 3].tolist() == [201, 100, 7]
    small = fp64_rows(logits[:20], torch.zeros(20, dtype=torch.long))
    assert small[0].tolist() == list(range(20)) and small[1] == 20


def test_on_vit_mini_the_minimum_is_the_whole_batchs_and_the_mean_near_it() -> None:
    bundle = fit_bundle(load_bundle(SAMPLES / "vit_mini_dfa.pt"))
    data = load_eval_data(SAMPLES / "images_eval.safetensors")
    x, y = torch.as_tensor(data.x[0:256]).float(), torch.as_tensor(data.y[0:256]).long()
    model = order_hidden(build_model(bundle), x[:1])
    logits, _, grads = forward_backward(model, x, y)
    model64 = in_float64(model)
    _, _, grads64 = forward_backward(model64, x.double(), y)
    every = [row_cosines(a.flatten(1), b.flatten(1)) for a, b in zip(grads, grads64, strict=True)]
    found_rows = fp64_agreement(model, model64, x, y, logits, grads, torch.Generator(), CROSS_ENTROPY, 0.999)[0]
    chosen = [agreement(rows) for rows in found_rows]
    for layer, (cos, found) in enumerate(zip(every, chosen, strict=True)):
        assert found is not None
        mean, minimum = found
        assert minimum >= float(cos.min()) - 1e-12, layer
        assert abs((1 - mean) - (1 - float(cos.mean()))) < 1e-4, layer
    h1 = every[1]
    assert chosen[1] is not None and 1 - chosen[1][1] == pytest.approx(1 - float(h1.min()), rel=1e-6)
    # the worst row of all 256, a confident one, is seen (7e-5 on the development machine: 1.3e-4
    # before the backward started from unit-row errors, whose float32 keeps its full precision)
    assert 1e-5 < 1 - float(h1.min()) < 1e-3
