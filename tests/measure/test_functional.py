"""Each measurement on hand-built tensors whose answer is known in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from fa_audit.measure.functional import (
    CACHED_ENTRIES,
    dot_and_square,
    medians,
    order_statistics,
    pairwise_cosine_from_sum,
    reciprocals,
    row_cosines,
    row_norms,
    spread_terms,
    state_norms,
)


def test_row_norms_are_per_sample_l2_not_the_minus_one_norm() -> None:
    t = torch.tensor([[3.0, 4.0], [6.0, 8.0]])
    assert row_norms(t).tolist() == [5.0, 10.0]
    # Pitfall 1: t.norm(-1) is one number for the whole tensor, not the row norms.
    assert t.norm(-1).numel() == 1


def test_row_norms_flatten_all_but_the_sample_axis() -> None:
    t = torch.ones(2, 3, 4)
    assert torch.allclose(row_norms(t), torch.full((2,), math.sqrt(12.0), dtype=torch.float64))


def test_cosines_of_known_angles() -> None:
    g = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    c = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 0.0]])
    assert torch.allclose(row_cosines(c, g), torch.tensor([1.0, 0.0, -1.0, 1 / math.sqrt(2)], dtype=torch.float64))


def test_tiny_norms_are_not_clamped_where_f_cosine_similarity_is_wrong() -> None:
    # Pitfall 2: at |g| ~ 1e-12 the eps=1e-8 clamp of F.cosine_similarity shrinks the answer.
    c = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    g = torch.tensor([[1e-12, 0.0]], dtype=torch.float64)
    ours = row_cosines(c, g)
    assert torch.allclose(ours, torch.tensor([1 / math.sqrt(2)], dtype=torch.float64))
    clamped = F.cosine_similarity(c, g, dim=-1)
    assert float(clamped) < 1e-3  # the library's answer is wrong by orders of magnitude


def test_zero_rows_are_excluded_as_nan_not_counted_as_zero() -> None:
    c = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    g = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    out = row_cosines(c, g)
    assert out[0] == 1.0 and out[1].isnan()


def test_row_cosines_broadcast_over_draws() -> None:
    g = torch.tensor([[1.0, 0.0]])
    c = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[-2.0, 0.0]]])  # K=3 draws, n=1
    assert row_cosines(c, g).flatten().tolist() == [1.0, 0.0, -1.0]


@pytest.mark.parametrize(
    "shape",
    [(1, 7, 64), (3, 40, CACHED_ENTRIES // 16 + 3), (2, 3, 2 * CACHED_ENTRIES + 1)],
    ids=["one block", "rows", "wide"],
)
def test_row_products_in_blocks_are_the_float64_sums_of_every_row(shape: tuple[int, ...]) -> None:
    """<c, g> and |c|² of every row, with a leading draw axis, whether the rows fit one block, span
    several or are each wider than one: float64 to its rounding, float32 to its own."""
    generator = torch.Generator().manual_seed(0)
    c = torch.randn(shape, generator=generator)
    g = torch.randn(shape[1:], generator=generator, dtype=torch.float64)
    want_dot, want_square = (c.double() * g).sum(-1), (c.double() ** 2).sum(-1)
    dot, square = dot_and_square(c, g)
    assert dot.dtype == square.dtype == torch.float64 and dot.shape == square.shape == shape[:-1]
    assert torch.allclose(dot, want_dot, rtol=1e-12, atol=1e-10) and torch.allclose(square, want_square, rtol=1e-12)
    spread_dot, spread_square = spread_terms(c[0], g.float())
    assert spread_dot.dtype == torch.float64 and spread_dot.shape == shape[1:-1]
    scale = shape[-1] ** 0.5
    assert torch.allclose(spread_dot, want_dot[0], rtol=0, atol=1e-5 * scale)
    assert torch.allclose(spread_square, want_square[0], rtol=1e-5)


def test_row_products_are_cache_sized_blocks_on_the_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU a [256, 65,536] state is 256 blocks of one row; elsewhere (a GPU, here the meta
    device, which has no cache to fit) 8 blocks of 32 rows, each block a few kernel launches."""
    calls: list[int] = []
    vecdot = torch.linalg.vecdot

    def counted(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append(a.shape[0])
        return vecdot(a, b)

    monkeypatch.setattr(torch.linalg, "vecdot", counted)
    for device, blocks in (("cpu", 256), ("meta", 8)):
        calls.clear()
        c, g = torch.empty(256, 65536, device=device), torch.empty(256, 65536, dtype=torch.float64, device=device)
        dot, square = dot_and_square(c, g)
        assert len(calls) == 2 * blocks and sum(calls) == 2 * 256 and dot.shape == square.shape == (256,)


def test_reciprocals_leave_zero_norms_at_zero() -> None:
    assert reciprocals(row_norms(torch.tensor([[0.0, 2.0], [0.0, 0.0], [3.0, 4.0]]))).tolist() == [0.5, 0.0, 0.2]


def test_pairwise_cosine_from_sum_matches_brute_force() -> None:
    torch.manual_seed(0)
    units = F.normalize(torch.randn(7, 5, dtype=torch.float64), dim=-1)
    brute = [float(units[i] @ units[j]) for i in range(7) for j in range(i + 1, 7)]
    assert math.isclose(pairwise_cosine_from_sum(units.sum(0), units.shape[0]), sum(brute) / len(brute), rel_tol=1e-12)


def test_median_of_even_count_is_the_midpoint() -> None:
    assert medians(torch.tensor([[1.0, 2.0, 3.0, 10.0]])) == [2.5]


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(finite, finite, finite, finite), min_size=1, max_size=8))
def test_row_cosines_agree_with_a_float64_reference(rows: list[tuple[float, float, float, float]]) -> None:
    t = torch.tensor(rows, dtype=torch.float32)
    c, g = t[:, :2], t[:, 2:]
    ours = row_cosines(c, g)
    for i, (a, b, x, y) in enumerate(rows):
        na, nb = math.hypot(a, b), math.hypot(x, y)
        if na == 0 or nb == 0:
            assert ours[i].isnan()
        else:
            assert math.isclose(float(ours[i]), (a * x + b * y) / (na * nb), rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 1e-12, 1e-30, 1e30, 1e37])
def test_state_norms_equal_float64_norms_at_every_scale(scale: float) -> None:
    """float32 sums where float32 holds the squares, float64 where it cannot."""
    h = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * scale
    exact = h.double().flatten(1).norm(dim=-1)
    assert torch.allclose(state_norms([h, h])[1], exact, rtol=1e-6)


def test_state_norms_redo_in_float64_when_any_state_is_out_of_float32s_range() -> None:
    h = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    states = [h, h * 1e20, h * 1e-12]
    norms = state_norms(states)
    for found, state in zip(norms, states, strict=True):
        assert torch.allclose(found, state.double().norm(dim=-1), rtol=1e-12)


def test_state_norms_keep_nan_and_inf_visible() -> None:
    h = torch.ones(3, 4)
    h[1, 2], h[2, 0] = float("nan"), float("inf")
    norms = state_norms([h])[0]
    assert norms[0] == 2.0 and norms[1].isnan() and norms[2].isinf()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 10, 11, 517, 4096, 4097])
def test_the_median_by_selection_is_torch_quantiles_bit_for_bit(n: int) -> None:
    """Odd and even counts, ties, the ends of float64's range, infinities and NaN."""
    g = torch.Generator().manual_seed(n)
    for scale in (1.0, 1e-300, 1e300):
        v = torch.randn(n, generator=g, dtype=torch.float64) * scale
        v[::3] = v[0]
        assert medians(v[None]) == [float(torch.quantile(v, 0.5))]
    for special in ([1.0, float("inf"), 2.0], [1.0, float("inf"), 2.0, float("inf")], [1.0, float("nan"), 2.0]):
        found = medians(torch.tensor([special]))[0]
        expected = float(torch.quantile(torch.tensor(special).double(), 0.5))
        assert found == expected or (math.isnan(found) and math.isnan(expected)), special


def test_a_row_with_nan_has_a_nan_median_and_leaves_the_other_rows_alone() -> None:
    rows = torch.tensor([[3.0, float("nan"), 1.0], [3.0, 2.0, 1.0]], dtype=torch.float64)
    found = medians(rows)
    assert math.isnan(found[0]) and found[1] == 2.0


@pytest.mark.parametrize("n", [1, 2, 7, 517, 4096])
def test_order_statistics_are_the_sorted_rows_values(n: int) -> None:
    """Every rank of rows with ties, infinities, a float32 input and a non-contiguous view."""
    g = torch.Generator().manual_seed(n)
    rows = torch.randn(6, 2 * n, generator=g, dtype=torch.float64)[:, ::2]
    rows[1, ::2] = rows[1, 0]
    rows[2, : n // 2] = float("inf")
    rows[3, n // 3 :] = float("-inf")
    ranks = tuple(range(1, n + 1)) if n < 10 else (1, n // 3, n // 2, n // 2 + 1, n)
    expected = rows.sort(dim=-1).values
    for rank, found in zip(ranks, order_statistics(rows, ranks), strict=True):
        assert torch.equal(found, expected[:, rank - 1])
    (as_float32,) = order_statistics(rows[4:].float(), (n,))
    assert as_float32.dtype == torch.float64 and torch.equal(as_float32, expected[4:, -1].float().double())
