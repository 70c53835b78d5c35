"""Streaming accumulators: the same numbers whatever the batch boundaries."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from fa_audit.measure.accumulate import AggregationSums, CosineSums, DirectionStability, Magnitudes, SampleTable
from fa_audit.measure.functional import dot_and_norms, pairwise_cosine_from_sum


def test_direction_stability_of_identical_gradients_is_one() -> None:
    ds = DirectionStability(size=4)
    ds.update(torch.ones(16, 3))
    assert math.isclose(ds.result() or 0.0, 1.0)


def test_direction_stability_ignores_batch_boundaries() -> None:
    torch.manual_seed(1)
    g = torch.randn(64, 5) + 0.5
    whole, pieces = DirectionStability(size=8), DirectionStability(size=8)
    whole.update(g)
    for part in g.split(5):  # boundaries that do not align with the minibatches
        pieces.update(part)
    units = torch.stack([F.normalize(F.normalize(c.double(), dim=-1).sum(0), dim=0) for c in g.split(8)])
    assert math.isclose(whole.result() or 0.0, pairwise_cosine_from_sum(units.sum(0), units.shape[0]), rel_tol=1e-12)
    assert math.isclose(pieces.result() or 0.0, whole.result() or 0.0, rel_tol=1e-12)


def _mean_pairwise(units: torch.Tensor) -> float:
    gram = units @ units.T
    k = units.shape[0]
    return float((gram.sum() - gram.diagonal().sum()) / (k * (k - 1)))


def test_direction_stabilitys_error_is_the_delete_a_group_jackknife() -> None:
    """Minibatch k (of the whole eval set) in group k mod 8, split across batches and merged over two
    ranks: the jackknife written out from the minibatches' unit vectors."""
    torch.manual_seed(2)
    g = torch.randn(8 * 50, 6, dtype=torch.float64) + 0.3
    ranks = [DirectionStability(size=8), DirectionStability(size=8, first=25)]  # the second's shard: minibatch 25 on
    for part in g[:200].split(7):
        ranks[0].update(part)
    ranks[1].update(g[200:])
    merged = DirectionStability.merged(ranks)
    units = torch.stack([F.normalize(F.normalize(c, dim=-1).sum(0), dim=0) for c in g.split(8)])
    groups = torch.arange(50) % 8  # as in one process
    left_out = torch.tensor([_mean_pairwise(units[groups != j]) for j in range(8)], dtype=torch.float64)
    expected = float((7 / 8 * ((left_out - left_out.mean()) ** 2).sum()).sqrt())
    assert merged.result() == pytest.approx(_mean_pairwise(units), rel=1e-12)
    assert merged.standard_error() == pytest.approx(expected, rel=1e-10)


def test_direction_stabilitys_error_is_the_spread_over_eval_sets() -> None:
    """200 independent eval sets of 64 minibatches, directions around a shared one: the jackknife
    error is, on average, the spread of dir_stab itself (within the 20 % its own noise allows)."""
    generator = torch.Generator().manual_seed(3)
    shared = F.normalize(torch.randn(40, generator=generator, dtype=torch.float64), dim=0)
    values, errors = [], []
    for _ in range(200):
        ds = DirectionStability(size=1)  # each row a minibatch: u_k = g_k / |g_k|
        ds.update(shared * 0.4 + torch.randn(64, 40, generator=generator, dtype=torch.float64) / math.sqrt(40))
        values.append(ds.result() or 0.0)
        errors.append(ds.standard_error() or 0.0)
    spread = float(torch.tensor(values).std())
    assert sum(errors) / len(errors) == pytest.approx(spread, rel=0.2)


def test_direction_stability_needs_two_minibatches() -> None:
    ds = DirectionStability(size=64)
    ds.update(torch.randn(100, 3))
    assert ds.result() is None and ds.standard_error() is None


def test_cosine_sums_exclude_and_count_zero_rows() -> None:
    sums = CosineSums.empty(1)
    c = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]])
    g = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    sums.add(*dot_and_norms(c, g))
    assert sums.excluded == 1
    assert float(sums.means()[0]) == 0.5  # (1 + 0) / 2, the zero row left out


def test_aggregation_strategies_on_known_vectors() -> None:
    # Two layers, two samples: layer 0 aligned, layer 1 orthogonal with 3x the gradient.
    c = [torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]])]
    g = [torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[3.0, 0.0], [3.0, 0.0]])]
    agg = AggregationSums(layers=2)
    parts = [dot_and_norms(ci, gi) for ci, gi in zip(c, g, strict=True)]
    agg.add_batch(*(torch.stack([p[k] for p in parts]) for k in range(3)), deep=1)
    out = agg.strategies(layer_mean=0.5)
    # Flattened: <c,g> = 2, |c|^2 = 4, |g|^2 = 20 -> 2 / sqrt(80).
    assert math.isclose(out["flattened"] or 0.0, 2 / math.sqrt(80))
    assert math.isclose(out["batch_mean"] or 0.0, 2 / math.sqrt(80))
    # Per sample across layers: 1 / (sqrt(2) * sqrt(10)).
    assert math.isclose(out["size_weighted"] or 0.0, 1 / math.sqrt(20))
    assert out["layer_mean"] == 0.5


def test_sample_table_grows_past_its_capacity_and_keeps_every_value() -> None:
    table = SampleTable(layers=2, capacity=3)
    values = torch.arange(1, 11, dtype=torch.float64)
    for part in values.split(4):
        h = torch.stack([part, 2 * part])
        table.add(h, h / 10, Magnitudes(torch.full_like(part, 3.0), torch.full_like(part, 0.5), True))
    assert table.filled == 10
    (h0, growth0, g0, rel0), (h1, growth1, g1, rel1) = table.medians()
    assert (h0, h1) == (5.5, 11.0)
    assert growth0 == 2.0 and growth1 is None  # the last layer has no next state
    assert math.isclose(g0, 1.65) and math.isclose(g1, 3.3)  # × the scale 3
    assert math.isclose(rel0, 1.1) and math.isclose(rel1, 2.2)  # / ‖e‖ = 0.5
    assert SampleTable(layers=0, capacity=0).medians() == []  # a pass that kept no layer


def test_sample_tables_of_ranks_merge_in_rank_order() -> None:
    parts = []
    for part in torch.arange(1, 9, dtype=torch.float64).split([3, 5]):
        table = SampleTable(layers=1, capacity=8)
        table.add(part[None], part[None], Magnitudes(torch.ones_like(part), torch.ones_like(part), True))
        parts.append(table)
    merged = SampleTable.merged(parts)
    assert merged.filled == 8 and merged.medians()[0][0] == 4.5


def test_cosine_sums_of_each_layer_equal_their_own() -> None:
    torch.manual_seed(2)
    dot, cc, gg = torch.randn(3, 7, dtype=torch.float64), torch.rand(3, 7, dtype=torch.float64), torch.rand(3, 7)
    cc[1, 2] = 0.0  # a zero credit row: left out of that layer alone
    each, alone = [CosineSums.empty(1) for _ in range(3)], [CosineSums.empty(1) for _ in range(3)]
    CosineSums.add_each(each, dot, cc, gg.double())
    for sink, row in zip(alone, range(3), strict=True):
        sink.add(dot[row][None], cc[row][None], gg[row].double())
    for a, b in zip(each, alone, strict=True):
        assert torch.allclose(a.means(), b.means(), rtol=1e-15) and a.excluded == b.excluded
    assert [s.excluded for s in each] == [0, 1, 0]
    for a, b in zip(each, alone, strict=True):
        assert torch.allclose(a.standard_errors(), b.standard_errors(), rtol=1e-12)


def test_the_cosines_standard_error_is_their_deviation_over_root_n_across_batches_and_ranks() -> None:
    """Γ's error from running sums equals the rows' own standard deviation (n − 1) over √n, the zero
    rows left out, however the rows come: in batches, or in parts of ranks merged."""
    generator = torch.Generator().manual_seed(4)
    dot = torch.randn(1, 300, generator=generator, dtype=torch.float64)
    cc, gg = torch.rand(1, 300, generator=generator, dtype=torch.float64) + 0.5, torch.rand(300, dtype=torch.float64)
    cc[0, [5, 77]] = 0.0
    rows = dot[0] / (cc[0] * gg).sqrt()
    kept = rows[cc[0] > 0]
    want = float(kept.std() / math.sqrt(len(kept)))
    parts = [CosineSums.empty(1) for _ in range(3)]
    for part, start in zip(parts, (0, 100, 200), strict=True):
        for at in range(start, start + 100, 40):  # batches of 40 within a rank's 100 rows
            stop = min(at + 40, start + 100)
            part.add(dot[:, at:stop], cc[:, at:stop], gg[at:stop])
    merged = CosineSums.merged(parts)
    assert merged.excluded == 2 and float(merged.count[0]) == 298
    assert float(merged.standard_errors()[0]) == pytest.approx(want, rel=1e-12)
    assert float(merged.means()[0]) == pytest.approx(float(kept.mean()), rel=1e-12)
    one = CosineSums.empty(1)
    one.add(dot[:, :1], cc[:, :1], gg[:1])
    assert math.isnan(float(one.standard_errors()[0]))  # one row has no spread to tell
