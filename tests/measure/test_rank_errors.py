"""The effective ranks' standard errors (a delete-a-group jackknife over their rows), the rank
ratio's 95 % interval, and the rank-collapse note that decides on it (a report whose interval leaves
out its ratio is refused, and --wide shows them: tests/test_median_intervals.py)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import pytest
import torch
from torch.nn import functional as F

from fa_audit import AuditReport
from fa_audit.adapt import build_model
from fa_audit.adapt.fit_keys import fit_bundle
from fa_audit.api import data_path_for
from fa_audit.checks import depth_utility
from fa_audit.config import Thresholds, merge
from fa_audit.loading import load_bundle, load_eval_data
from fa_audit.measure.diagnostics import RANK_GROUPS, EffectiveRank, effective_rank, product_rank, rank_ratio

from ..conftest import SAMPLES

Tensor = torch.Tensor
T3 = 3.1824  # Student's t, 3 degrees of freedom, 97.5 % (the tables)


def _svd_rank(matrix: Tensor) -> float:
    s = torch.linalg.svdvals(matrix.double())
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _by_hand(matrix: Tensor) -> tuple[list[float], float]:
    """Each group's leaving out (row r in group r mod 4, or mod the rows where fewer) by float64 SVD,
    and the jackknife's error."""
    rows = torch.arange(matrix.shape[0])
    groups = min(len(rows), RANK_GROUPS)
    left_out = [_svd_rank(matrix[rows % groups != g]) for g in range(groups)]
    mean = sum(left_out) / groups
    return left_out, math.sqrt((groups - 1) / groups * sum((v - mean) ** 2 for v in left_out))


def _found(rank: EffectiveRank | None) -> EffectiveRank:
    assert rank is not None and rank.left_out is not None and rank.se is not None
    return rank


@pytest.mark.parametrize("shape", [(256, 64), (256, 3000), (50, 300), (41, 7), (3, 5)])
def test_each_group_left_out_is_the_rank_of_the_other_rows(shape: tuple[int, int]) -> None:
    """Tall (the Gram matrix less each group's) and wide (the n × n Gram's submatrices, padded where
    the groups differ in size), scaled rows, against float64 SVDs of the rows kept."""
    g = torch.Generator().manual_seed(0)
    spectrum = torch.arange(1, shape[1] + 1, dtype=torch.float64) ** -0.7
    matrix = torch.randn(shape, generator=g, dtype=torch.float64) * spectrum
    scale = torch.rand(shape[0], generator=g, dtype=torch.float64) + 0.2
    rank = _found(effective_rank(matrix, scale))
    left_out, se = _by_hand(matrix * scale.view(-1, 1))
    assert rank.value == pytest.approx(_svd_rank(matrix * scale.view(-1, 1)), rel=1e-9)
    assert rank.left_out.tolist() == pytest.approx(left_out, rel=1e-9)
    assert rank.se == pytest.approx(se, rel=1e-6)


@pytest.mark.parametrize(
    ("rows", "classes", "width", "within"), [(256, 10, 500, 1e-9), (7, 10, 300, 1e-6), (30, 10, 6, 1e-6)]
)
def test_a_products_groups_are_left_out_of_its_rows(rows: int, classes: int, width: int, within: float) -> None:
    """DFA's credit e · B from its factors: each leaving out is the rank of the product's other rows
    (more classes than rows or than the width: within the rounding a rank-deficient Gram matrix's
    zero eigenvalues leave, 2.3e-7 of the rank measured)."""
    g = torch.Generator().manual_seed(1)
    e = torch.randn(rows, classes, generator=g, dtype=torch.float64)
    b = torch.randn(classes, width, generator=g, dtype=torch.float64)
    scale = torch.rand(rows, generator=g, dtype=torch.float64) + 0.1
    rank = _found(product_rank(e, b, scale))
    left_out, se = _by_hand((e * scale.view(-1, 1)) @ b)
    assert rank.left_out.tolist() == pytest.approx(left_out, rel=within)
    assert rank.se == pytest.approx(se, rel=1e3 * within)


def test_the_ratio_leaves_the_same_rows_out_of_both_ranks() -> None:
    credit = EffectiveRank(2.0, torch.tensor([2.1, 1.9, 2.0, 2.2, 1.8, 2.0, 2.05, 1.95], dtype=torch.float64))
    bp = EffectiveRank(4.0, torch.tensor([4.0, 4.1, 3.9, 4.0, 4.2, 3.8, 4.0, 4.0], dtype=torch.float64))
    ratio = _found(rank_ratio(credit, bp))
    assert ratio.value == 0.5
    assert ratio.left_out.tolist() == pytest.approx((credit.left_out / bp.left_out).tolist())  # type: ignore[operator]
    assert rank_ratio(credit, EffectiveRank(0.0, None)) is None
    assert rank_ratio(credit, EffectiveRank(4.0, None)) == EffectiveRank(0.5, None)


@pytest.mark.parametrize("shape", [(256, 64), (256, 600)])
def test_a_rank_resting_on_one_row_has_no_error(shape: tuple[int, int]) -> None:
    """One nonzero row: rank 1, and the group without it has no rank, so there is no jackknife (not a
    rank of the rounding a total less that row leaves); the same for a product whose rows are so."""
    matrix = torch.zeros(shape, dtype=torch.float64)
    matrix[5] = torch.randn(shape[1], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    rank = effective_rank(matrix)
    assert rank is not None and rank.value == pytest.approx(1.0, abs=1e-5)  # the Gram matrix's rounding, as ever
    assert rank.left_out is None and rank.se is None
    rows = torch.zeros(shape[0], 10, dtype=torch.float64)
    rows[5, 3] = 2.0
    product = product_rank(rows, torch.randn(10, 50, dtype=torch.float64), torch.ones(shape[0], dtype=torch.float64))
    assert product is not None and product.value == pytest.approx(1.0) and product.se is None


def test_two_rows_have_a_rank_and_no_error() -> None:
    """Two rows make two groups: too few for a jackknife."""
    rank = effective_rank(torch.randn(2, 5, generator=torch.Generator().manual_seed(2)))
    assert rank is not None and rank.value > 1 and rank.left_out is None and rank.se is None


@pytest.fixture(scope="module")
def bp_gradients() -> list[Tensor]:
    """bp.pt's per-sample BP gradients at every h_l over its 4,096 eval samples (float64 model and loss)."""
    bundle = fit_bundle(load_bundle(SAMPLES / "bp.pt"))
    model = build_model(bundle)
    model.module.double()
    data = load_eval_data(data_path_for(bundle, None))
    x, y = torch.as_tensor(data.x[:]).double(), torch.as_tensor(data.y[:]).long()
    logits, hidden = model.forward_hidden(x)
    grads = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), hidden)
    return [g.detach().flatten(1) for g in grads]


def test_the_error_is_the_spread_over_other_sets_of_rows(bp_gradients: list[Tensor]) -> None:
    """Over 100 random sets of 256 of bp.pt's samples (each row its sample's gradient), the ranks'
    real spread (with the finite population's correction) against the jackknife's mean error: within
    25 % at every layer (measured 0.88–1.06; the spread's own error over 100 sets is about 7 %)."""
    g = torch.Generator().manual_seed(0)
    for layer, grads in enumerate(bp_gradients):
        values, errors = [], []
        for _ in range(100):
            rank = _found(effective_rank(grads[torch.randperm(len(grads), generator=g)[:256]]))
            values.append(rank.value)
            errors.append(rank.se)
        spread = statistics.stdev(values) / math.sqrt(1 - 256 / len(grads))
        assert 0.75 < spread / statistics.mean(errors) < 1.33, f"h{layer}"


def test_the_audits_ranks_carry_their_errors_and_the_ratio_its_interval(audited: Callable[..., AuditReport]) -> None:
    """bp.pt: the audit's BP ranks are those of its first 256 samples' gradients, each with the jackknife's
    error; the ratio's interval is ratio · exp(± t₃ · se / ratio), and holds the ratio."""
    for layer in audited("bp").measurements.layers:
        assert layer.rank_ratio is not None and layer.rank_ratio_se is not None and layer.rank_ratio_interval
        assert layer.credit_rank_se is not None and layer.bp_rank_se is not None and layer.bp_rank_se > 0
        spread = math.exp(T3 * layer.rank_ratio_se / layer.rank_ratio)
        assert layer.rank_ratio_interval == pytest.approx(
            (layer.rank_ratio / spread, layer.rank_ratio * spread), rel=1e-4
        )
    scalars = audited("bp").scalars()
    for layer in audited("bp").measurements.layers:
        assert scalars[f"fa_audit/credit_rank_se/{layer.name}"] == layer.credit_rank_se  # a training loop logs it
    for layer, grads in zip(audited("bp").measurements.layers, _first_batch(), strict=True):
        rank = _found(effective_rank(grads))
        assert layer.bp_rank == pytest.approx(rank.value, rel=2e-3)
        assert layer.bp_rank_se == pytest.approx(rank.se, rel=0.05)


def _first_batch() -> list[Tensor]:
    """bp.pt's gradients on its first 256 samples: the rows the audit's ranks are measured on."""
    bundle = fit_bundle(load_bundle(SAMPLES / "bp.pt"))
    model = build_model(bundle)
    model.module.double()
    data = load_eval_data(data_path_for(bundle, None))
    x, y = torch.as_tensor(data.x[:256]).double(), torch.as_tensor(data.y[:256]).long()
    logits, hidden = model.forward_hidden(x)
    return [g.flatten(1) for g in torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), hidden)]


def _min_ratio(value: float) -> Thresholds:
    return merge(Thresholds(), {"depth_utility": {"min_rank_ratio": value}})


def test_rank_collapse_is_named_only_over_the_whole_interval(audited: Callable[..., AuditReport]) -> None:
    """small_cnn_dfa.pt: the DFA credit's rank is that of its 10 classes against ~100 for the BP gradient
    at h0 and h1 (ratios 0.074 and 0.086). Against 0.1, h0's whole interval is below (rank collapse) and
    h1's straddles it (possible); against 0.07, h0's straddles and h1's is above (no note); below every
    interval, no note."""
    m = audited("small_cnn_dfa").measurements
    h0, h1 = m.layers[:2]
    assert h0.rank_ratio_interval is not None and h1.rank_ratio_interval is not None
    assert h0.rank_ratio_interval[1] < 0.1 < h1.rank_ratio_interval[1]
    assert h0.rank_ratio_interval[0] < 0.07 < h1.rank_ratio_interval[0]

    def notes(threshold: float) -> list[str]:
        return [n.split(":")[0] for n in depth_utility(m, _min_ratio(threshold), None).notes if "rank collapse" in n]

    assert notes(0.1) == ["rank collapse at h0 (stages.0)", "possible rank collapse at h1 (stages.1)"]
    assert notes(0.07) == ["possible rank collapse at h0 (stages.0)"]
    assert notes(h0.rank_ratio_interval[0] * 0.99) == []
    named = depth_utility(m, _min_ratio(0.1), None).notes
    assert any(f"{h1.rank_ratio_interval[0]:.3g} … {h1.rank_ratio_interval[1]:.3g}" in n for n in named)
