"""Pure tensor functions behind every per-layer number (docs/measurements.md).

All of them work in float64, take row-wise L2 norms (``norm(dim=-1)``, never
``norm(-1)``: pitfall 1) and never clamp a norm with an eps (pitfall 2; docs/pitfalls.md).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

Tensor = torch.Tensor


def row_norms(t: Tensor) -> Tensor:
    """Per-sample L2 norm of a [n, ...] tensor, in float64."""
    norms: Tensor = torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=-1, dtype=torch.float64)
    return norms


def state_norms(states: list[Tensor]) -> Tensor:
    """Row norms of every hidden state, [L, n] float64: summed in float32 (relative error ~1e-7,
    and 14 times cheaper on wide conv states than converting them to float64), redone in float64
    wherever float32 may not hold the squares: a norm above 1e18 or below 1e-10, a NaN or an Inf.
    One range check for all the states, not one a state (on a small network each call costs more
    than its arithmetic)."""
    flat = [h.reshape(h.shape[0], -1) for h in states]
    if all(f.dtype == torch.float32 for f in flat):
        norms = torch.stack([torch.linalg.vector_norm(f, dim=-1) for f in flat])
        if bool(((norms > 1e-10) & (norms < 1e18)).all()):
            return norms.double()
    return torch.stack([row_norms(f) for f in flat])


CACHED_ENTRIES = 1 << 16
"""Entries of c multiplied at once by :func:`dot_and_square` and :func:`spread_terms`: a product this
size (512 KiB in float64) is still in the core's cache when it is summed. Over such blocks a multiply
and a sum took a fifth to a half of a contraction's (einsum) time at widths from 1,024 to 65,536, in
float64 and float32, and less than one multiply-and-sum over all of c from 4,096 (one thread:
benchmarks/row_products.py)."""
DEVICE_ENTRIES = 1 << 21
"""The blocks' size off the CPU (16 MiB in float64): on a GPU each block costs a few kernel launches,
and cache-sized blocks would make a [256, 65,536] state 768 of them."""


def dot_and_square(c: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """Row-wise <c, g> and |c|^2 in float64 for c [..., n, D] against g [n, D], in blocks of
    :data:`CACHED_ENTRIES` of c: never a float64 copy of all of c (it was the peak of an FA
    audit's memory)."""
    return _row_products(c, g, torch.float64)


def spread_terms(c: Tensor, g32: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`dot_and_square` of one draw's c [n, D] against g [n, D] given in float32, contracted in
    float32 (4x faster than float64 on a LeNet's [128, 4704] states): for the null's draws, which give
    the spread of a random band, and which float32's relative 1e-6 on each dot cannot move; the
    persisted feedback's terms, which the printed cosine is made of, stay float64."""
    return _row_products(c, g32, torch.float32)


def _row_products(c: Tensor, g: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Row-wise <c, g> and |c|^2 computed in ``dtype``, given in float64."""
    entries = CACHED_ENTRIES if c.device.type == "cpu" else DEVICE_ENTRIES
    rows = max(1, entries * max(g.shape[0], 1) // max(c.numel(), 1))
    dots, squares = [], []
    for start in range(0, g.shape[0], rows):
        part, other = c[..., start : start + rows, :].to(dtype), g[start : start + rows].to(dtype)
        dots.append(torch.linalg.vecdot(part, other))
        squares.append(torch.linalg.vecdot(part, part))
    if len(dots) == 1:  # a small network's every call: no copy
        return dots[0].double(), squares[0].double()
    return torch.cat(dots, -1).double(), torch.cat(squares, -1).double()


def dot_and_norms(c: Tensor, g: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Row-wise <c, g>, |c|^2 and |g|^2 in float64 for c [..., n, D] against g [n, D]."""
    dot, cc = dot_and_square(c, g)
    g64 = g.double()
    return dot, cc, torch.linalg.vecdot(g64, g64).expand(dot.shape)


def cosines(dot: Tensor, cc: Tensor, gg: Tensor) -> Tensor:
    """dot / (|c| |g|) with no eps; NaN where either norm is exactly zero."""
    denom = (cc * gg).sqrt()
    return torch.where(denom > 0, dot / denom, torch.full_like(dot, float("nan")))


def row_cosines(c: Tensor, g: Tensor) -> Tensor:
    """Per-row cosine of c [..., n, D] with g [n, D]; NaN marks excluded (zero) rows."""
    return cosines(*dot_and_norms(c, g))


def jackknife_se(left_out: Tensor) -> float:
    """The delete-a-group jackknife's standard error of a value from its values with each of G
    groups left out in turn: √((G − 1)/G · Σ (θ_g − θ̄)²)."""
    groups = len(left_out)
    return float(((groups - 1) / groups * ((left_out - left_out.mean()) ** 2).sum()).sqrt())


def reciprocals(norms: Tensor) -> Tensor:
    """1 / norm, and 0 for a zero norm (a zero row carries no direction)."""
    return torch.where(norms > 0, norms.reciprocal(), 0.0)


def pairwise_cosine_from_sum(total: Tensor, k: int) -> float:
    """Mean pairwise cosine of k unit vectors from their sum alone, k >= 2.

    |sum u|^2 = k + sum_{i != j} <u_i, u_j>, so neither the vectors nor a k x k matrix
    need be kept.
    """
    return float(((total @ total) - k) / (k * (k - 1)))


def order_statistics(rows: Tensor, ranks: tuple[int, ...]) -> list[Tensor]:
    """Each row's ``rank``-th smallest value (1-based) for each of ``ranks``, float64 on the CPU, by
    numpy's introselect, one rank at a time: torch's ``kthvalue`` took 1 ms a rank for 16 rows of
    4,096 values, numpy's 0.15 ms (and 1 ms for one call given all four ranks). A NaN sorts above
    every number in both; the rows holding one are the callers' to mask."""
    values = rows.detach().double().cpu().numpy()
    return [torch.from_numpy(np.partition(values, rank - 1, axis=-1)[:, rank - 1]) for rank in ranks]


def medians(rows: Tensor) -> list[float]:
    """Each row's median (the two middle values' midpoint for an even count, as
    ``torch.quantile(row, 0.5)`` gives it, bit for bit: ``lerp``; NaN for a row holding one), by
    selection rather than quantile's sort, every row at once."""
    rows = rows.detach().double().cpu()
    n = rows.shape[-1]
    if n % 2:
        (middle,) = order_statistics(rows, (n // 2 + 1,))
    else:
        lower, upper = order_statistics(rows, (n // 2, n // 2 + 1))
        middle = torch.lerp(lower, upper, 0.5)
    return torch.where(rows.isnan().any(-1), float("nan"), middle).tolist()


def median_intervals(rows: Tensor, confidence: float) -> list[tuple[float, float] | None]:
    """Each row's distribution-free interval for the median at ``confidence``: the order statistics
    of :func:`median_ranks` (None for a row holding a NaN or an infinity, or too short to have one)."""
    ranks = median_ranks(rows.shape[-1], confidence)
    if ranks is None:
        return [None] * rows.shape[0]
    low, high = order_statistics(rows, ranks)
    usable = torch.isfinite(rows).all(-1)
    return [(lo, hi) if ok else None for lo, hi, ok in zip(low.tolist(), high.tolist(), usable.tolist(), strict=True)]


@functools.lru_cache(maxsize=32)
def median_ranks(n: int, confidence: float) -> tuple[int, int] | None:
    """The 1-based ranks (j, n + 1 − j) whose order statistics bracket the median of n independent
    samples with probability at least ``confidence``, whatever their distribution: the median lies
    below the j-th smallest value exactly when fewer than j samples fall below it, which a
    Binomial(n, ½) count does with probability P(B ≤ j − 1); j is the largest rank that keeps this
    at most (1 − confidence) / 2. None where even the least and greatest values do not bracket it
    with that probability (n ≤ 5 at 95 %)."""
    if n < 1:
        return None
    # The counts within 16 standard deviations (√n / 2 each) below n / 2: the mass further down, under
    # 1e-50, is no part of any tail that matters, and a billion samples sum 126,000 terms, not 5e8.
    start = max(0, n // 2 - math.ceil(8 * math.sqrt(n)))
    counts = torch.arange(start, n // 2 + 1, dtype=torch.float64)
    log_pmf = math.lgamma(n + 1) - torch.lgamma(counts + 1) - torch.lgamma(n - counts + 1) - n * math.log(2.0)
    tail = torch.cumsum(log_pmf.exp(), 0)  # P(B ≤ m) for m = start … n // 2, to 1e-50
    j = start + int((tail <= (1.0 - confidence) / 2).sum())
    return None if j == 0 else (j, n + 1 - j)


def as_float64(x: Tensor) -> Tensor:
    """Inputs for the float64 model: token ids stay integers."""
    return x.double() if x.is_floating_point() else x
