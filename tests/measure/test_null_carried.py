"""The drawn null's σ measured on n of Γ's N samples and carried to N
(:meth:`fa_audit.measure.accumulate.CosineSums.carried_std`): against the spread of the very same
draws' means over all N samples of a trained FA network."""

from __future__ import annotations

import math
from contextlib import nullcontext

import pytest
import torch

from fa_audit.adapt import build_model
from fa_audit.adapt.fit_keys import fit_bundle
from fa_audit.api import data_path_for
from fa_audit.loading import load_bundle, load_eval_data
from fa_audit.measure.accumulate import CosineSums
from fa_audit.measure.functional import cosines, row_norms
from fa_audit.measure.null_band import Reach, carried_spread, reach, z_interval
from fa_audit.measure.run import bp_pass
from fa_audit.methods import Batch, get_method

from ..conftest import SAMPLES

Tensor = torch.Tensor
DRAWS = 200


def _sums(cos: Tensor) -> CosineSums:
    """A null's sums of the [K, n] cosines, as the audit adds them."""
    sums = CosineSums.empty(cos.shape[0])
    sums.add(cos, torch.ones_like(cos), torch.ones(cos.shape[1], dtype=torch.float64))
    return sums


@pytest.fixture(scope="module")
def fa_null() -> Tensor:
    """fa_mlp.pt's null: DRAWS draws of every B, each sample's cosine at each layer, [L, K, N]."""
    bundle = fit_bundle(load_bundle(SAMPLES / "fa_mlp.pt"))
    model, method = build_model(bundle), get_method("fa")
    data = load_eval_data(data_path_for(bundle, None), "labels")
    x, y = torch.as_tensor(data.x[: data.samples]).float(), torch.as_tensor(data.y[: data.samples]).long()
    generator = torch.Generator().manual_seed(3)
    null = method.draw_null_feedback(method.feedback_from(model, bundle.feedback), DRAWS, generator)
    parts = []
    for start in range(0, len(y), 512):
        rows = slice(start, start + 512)
        passed = bp_pass(model, x[rows], y[rows], nullcontext())
        batch = Batch(x=x[rows], y=y[rows], error=passed.error, grads=passed.grads, scale=passed.scale)
        targets = [g.flatten(1).double() for g in passed.grads]
        with torch.no_grad():
            terms = method.alignment_terms(model, batch, null, generator, targets)
        layers = [(found, t) for found, t in zip(terms, targets, strict=True) if found is not None]
        parts.append(torch.stack([cosines(*found, row_norms(t)[None] ** 2) for found, t in layers]))
    return torch.cat(parts, -1)


def test_the_carried_sigma_is_the_spread_over_every_sample(fa_null: Tensor) -> None:
    """Over 40 random subsets of 64 of the 4096 samples, the draws' spread on the subset is too wide
    by 4–18 % (the sample noise of 64 rows), and carried to 4096 it is the spread over all of them
    within the subsets' own scatter; the same draws, so the draws' noise is common to both."""
    generator = torch.Generator().manual_seed(11)
    layers, _, total = fa_null.shape
    too_wide = []
    for layer in range(layers):
        full = float(fa_null[layer].mean(-1).std())
        raw, carried = [], []
        for _ in range(40):
            picked = fa_null[layer][:, torch.randperm(total, generator=generator)[:64]]
            on_subset = float(picked.mean(-1).std())
            raw.append(on_subset / full)
            carried.append(_sums(picked).carried_std(on_subset, total) / full)
        assert sum(carried) / 40 == pytest.approx(1.0, abs=0.03), layer
        too_wide.append(sum(raw) / 40)
    assert min(too_wide) > 1.03
    assert too_wide[0] > 1.1  # the first layer's credit varies the most from sample to sample


def test_a_null_on_every_sample_is_not_carried(fa_null: Tensor) -> None:
    cos = fa_null[0]
    std = float(cos.mean(-1).std())
    assert _sums(cos).carried_std(std, cos.shape[1]) == std
    assert _sums(cos[:, :100]).carried_std(0.5, 100) == 0.5


def test_rows_that_do_not_covary_are_carried_as_independent() -> None:
    """Cosines independent from row to row (ρ̄ = 0): σ_N = sqrt(v̄ / N); a negative estimate of the
    rows' covariance is taken as 0, the wider end, not as a σ below that."""
    generator = torch.Generator().manual_seed(0)
    cos = torch.randn(400, 64, generator=generator, dtype=torch.float64) * 0.1
    sums = _sums(cos)
    assert sums.within / sums.within_dof == pytest.approx(0.01, rel=0.05)
    independent = math.sqrt(sums.within / sums.within_dof / 4096)
    assert sums.carried_std(float(cos.mean(-1).std()), 4096) == pytest.approx(independent, rel=0.3)
    assert sums.carried_std(1e-9, 4096) == pytest.approx(independent, rel=1e-12)


def test_the_carried_sums_add_over_chunks_and_ranks(fa_null: Tensor) -> None:
    cos = fa_null[1][:, :300]
    whole = _sums(cos)
    parts = [_sums(cos[:, :100]), _sums(cos[:, 100:])]
    merged = CosineSums.merged(parts)
    assert merged.within == pytest.approx(whole.within, rel=1e-12)
    assert merged.within_dof == whole.within_dof == 300 * (DRAWS - 1)
    std = float(cos.mean(-1).std())
    assert merged.carried_std(std, 4096) == pytest.approx(whole.carried_std(std, 4096), rel=1e-12)


def test_a_carried_z_interval_widens_but_keeps_the_subsamples_low_end() -> None:
    """s = σ_n / σ_N: μ's term widens by s², σ's by s⁴; a positive z is also at least z / s, the z of
    the subsample alone, so a z in the hundreds on samples that barely covary stays reached."""
    assert z_interval(10.0, 20, 1.0) == z_interval(10.0, 20)
    plain_low, plain_high = z_interval(10.0, 20)
    low, high = z_interval(10.0, 20, 1.2)
    assert low < plain_low < 10.0 < plain_high < high
    assert low >= z_interval(10.0 / 1.2, 20)[0]
    wide_low, _ = z_interval(441.0, 20, 1.8)  # bp.pt's h0: the rows' covariance is near 0
    assert wide_low == pytest.approx(z_interval(441.0 / 1.8, 20)[0]) and wide_low > 100
    assert reach(441.0, z_interval(441.0, 20, 1.8), 3.0) is Reach.REACHED
    negative_low, negative_high = z_interval(-2.0, 20, 1.5)  # no floor below a negative z
    assert negative_low < -2.0 < negative_high
    assert carried_spread(0.02, 0.025) == pytest.approx(1.25)
    assert carried_spread(0.02, None) == carried_spread(0.02, 0.01) == carried_spread(None, 0.02) == 1.0
