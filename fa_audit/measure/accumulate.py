"""Running per-layer statistics over a stream of batches: memory stays O(width)
per layer, plus four scalars per sample and layer for the medians. A batch is folded in for every
layer at once where the layers' numbers are rows of one tensor: on a small network the calls, not
the arithmetic, were the bookkeeping's cost (a dozen per layer and batch, as many as its model's)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

import torch

from ..report import INTERVAL_CONFIDENCE
from .functional import (
    Tensor,
    cosines,
    jackknife_se,
    median_intervals,
    medians,
    pairwise_cosine_from_sum,
    reciprocals,
    row_norms,
)
from .null_closed import ClosedNull
from .student_t import student_t

GROUPS = 8
"""dir_stab's jackknife groups: the minibatches' unit sums are kept in this many parts."""

PENDING_ENTRIES = 1 << 16
"""Entries of closed minibatches' sums held before they are normalised into the total (512 KiB)."""


class DirectionStability:
    """dir_stab: mean pairwise cosine of u_k = normalize(mean of g/|g| over minibatch k),
    with minibatches of ``size`` consecutive samples (a trailing partial one is dropped).
    Only the running sums of the u_k are kept, one per :data:`GROUPS` (minibatch k in group
    k mod GROUPS, for the delete-a-group jackknife of its standard error), and the sums of
    the minibatches closed since they were last formed (up to PENDING_ENTRIES: normalised a
    few batches at a time, not batch by batch)."""

    def __init__(self, size: int, first: int = 0) -> None:
        """``first``: the index of this rank's first minibatch in the whole eval set, so that every
        minibatch is in the group it would be in one process."""
        self.size = size
        self.partial: Tensor | None = None
        self.filled = 0
        self.totals: Tensor | None = None
        """[GROUPS, D]: each group's sum of u_k."""
        self.counts = torch.zeros(GROUPS, dtype=torch.int64)
        self.closed = first
        """The next minibatch's index in the whole eval set: its group."""
        self.pending: list[Tensor] = []
        self.pending_entries = 0

    def update(self, g: Tensor, inverse: Tensor | None = None) -> None:
        """``inverse``: 1 / g's row norms (0 for a zero row) when already known."""
        if g.dim() != 2 or g.dtype != torch.float64:  # the audit's own targets are flat float64 already
            g = g.reshape(g.shape[0], -1).double()
        inverse = reciprocals(row_norms(g)) if inverse is None else inverse
        start = 0
        whole = (g.shape[0] // self.size) * self.size if self.filled == 0 else 0
        if whole:  # the batch's whole minibatches at once: one product, not one per minibatch
            # bmm, not einsum: the same product at a third of the call's cost
            sums = torch.bmm(inverse[:whole].view(-1, 1, self.size), g[:whole].view(-1, self.size, g.shape[1]))
            self._close_minibatches(sums.squeeze(1))
            start = whole
        while start < g.shape[0]:
            take = min(self.size - self.filled, g.shape[0] - start)
            chunk = inverse[start : start + take] @ g[start : start + take]  # the sum of the unit rows
            self.partial = chunk if self.partial is None else self.partial + chunk
            self.filled += take
            start += take
            if self.filled == self.size:
                self._close_minibatches(self.partial.unsqueeze(0))
                self.partial, self.filled = None, 0

    def _close_minibatches(self, sums: Tensor) -> None:
        self.pending.append(sums)
        self.pending_entries += sums.numel()
        if self.pending_entries >= PENDING_ENTRIES:
            self._flush()

    def _flush(self) -> None:
        """Each pending row (one minibatch's sum of unit rows) normalised into its group's total;
        a zero sum (every row of the minibatch zero) is no direction and is left out (it stays a
        zero row, which adds nothing: no boolean indexing)."""
        if not self.pending:
            return
        sums = self.pending[0] if len(self.pending) == 1 else torch.cat(self.pending)
        self.pending, self.pending_entries = [], 0
        norms = sums.norm(dim=1)
        kept = norms > 0
        units = sums / torch.where(kept, norms, 1.0)[:, None]
        group = (torch.arange(len(sums), device=sums.device) + self.closed) % GROUPS
        self.closed += len(sums)
        totals = torch.zeros(GROUPS, sums.shape[1], dtype=sums.dtype, device=sums.device).index_add_(0, group, units)
        self.totals = totals.cpu() if self.totals is None else self.totals + totals.cpu()
        self.counts += torch.bincount(group[kept], minlength=GROUPS).cpu()

    @classmethod
    def merged(cls, parts: Sequence[DirectionStability]) -> DirectionStability:
        """The ranks' closed minibatches together (group by group); a rank's trailing partial one is
        dropped, as the whole's is (shards are cut at multiples of the minibatch size)."""
        out = cls(parts[0].size)
        for part in parts:
            part._flush()
        totals = [p.totals for p in parts if p.totals is not None]
        out.totals = torch.stack(totals).sum(0) if totals else None
        out.counts = torch.stack([p.counts for p in parts]).sum(0)
        return out

    def result(self) -> float | None:
        self._flush()
        count = int(self.counts.sum())
        if self.totals is None or count < 2:
            return None
        return pairwise_cosine_from_sum(self.totals.sum(0), count)

    def standard_error(self) -> float | None:
        """dir_stab's delete-a-group jackknife standard error: the minibatches are independent, and
        leaving each group out in turn gives the spread of the mean pairwise cosine (None with
        fewer than three groups holding minibatches, or too few minibatches to leave one out)."""
        found = self._jackknife()
        return None if found is None else found[0]

    def interval(self, confidence: float) -> tuple[float, float] | None:
        """dir_stab ± t · its standard error, t Student's on the groups less one degrees of freedom
        (the jackknife's): None where either is undefined."""
        value, found = self.result(), self._jackknife()
        if value is None or found is None:
            return None
        half = student_t(confidence, found[1] - 1) * found[0]
        return (value - half, value + half) if math.isfinite(half) else None

    def _jackknife(self) -> tuple[float, int] | None:
        """The standard error and the groups it was formed over."""
        self._flush()
        if self.totals is None:
            return None
        total, count = self.totals.sum(0), int(self.counts.sum())
        used = [g for g in range(GROUPS) if int(self.counts[g]) > 0]
        if len(used) < 3 or any(count - int(self.counts[g]) < 2 for g in used):
            return None
        left_out = torch.tensor(
            [pairwise_cosine_from_sum(total - self.totals[g], count - int(self.counts[g])) for g in used],
            dtype=torch.float64,
        )
        return jackknife_se(left_out), len(used)


Interval = tuple[float, float] | None
T = TypeVar("T")


class SampleTable:
    """Every layer's four values per sample for the medians: ‖h_l‖, ‖g_l‖ (at its true size),
    ‖g_l‖ / ‖e‖ (the gradient per unit of output error: reference validity's Mode 1 test) and
    ‖h_{l+1}‖ / ‖h_l‖ (none for the last layer), in one preallocated float64 [4, L, capacity]
    buffer, written once a batch.

    Hundreds of small tensors kept across batches would pin glibc's heap between the
    large per-batch temporaries, and peak memory would then grow with the sample count.
    """

    def __init__(self, layers: int, capacity: int) -> None:
        self.data = torch.empty(4, layers, max(capacity, 1), dtype=torch.float64)
        self.filled = 0

    def add(self, h_norms: Tensor, g_norms: Tensor, magnitudes: Magnitudes) -> None:
        """One batch's [L, n] row norms of every h_l and ĝ_l (unit-error space)."""
        layers, n = h_norms.shape
        values = h_norms.new_empty(4, layers, n)
        values[0] = h_norms
        torch.mul(g_norms, magnitudes.scale, out=values[1])
        torch.div(g_norms, magnitudes.error_norm, out=values[2])
        torch.div(h_norms[1:], h_norms[:-1], out=values[3, :-1])
        values[3, -1:] = float("nan")  # the last layer has no growth; never read (medians)
        self._append(values)

    def _append(self, values: Tensor) -> None:
        end = self.filled + values.shape[-1]
        if end > self.data.shape[-1]:
            grown = self.data.new_empty(*self.data.shape[:2], max(end, 2 * self.data.shape[-1]))
            grown[..., : self.filled] = self.data[..., : self.filled]
            self.data = grown
        self.data[..., self.filled : end] = values
        self.filled = end

    def medians(self) -> list[tuple[float, float | None, float, float]]:
        """Each layer's medians of ‖h_l‖, of the growth (None for the last layer), of ‖g_l‖ and of
        ‖g_l‖ / ‖e‖."""
        kinds, layers = self.data.shape[:2]
        if not layers:
            return []
        assert self.filled, "medians asked of layers that saw no sample"
        return _by_layer(medians(self.data[..., : self.filled].reshape(kinds * layers, -1)), layers)

    def intervals(self) -> list[tuple[Interval, Interval, Interval, Interval]]:
        """The :data:`INTERVAL_CONFIDENCE` interval of each of :meth:`medians`, in its order (the growth's
        None for the last layer)."""
        kinds, layers = self.data.shape[:2]
        if not layers:
            return []
        rows = self.data[..., : self.filled].reshape(kinds * layers, -1)
        return _by_layer(median_intervals(rows, INTERVAL_CONFIDENCE), layers)

    @classmethod
    def merged(cls, parts: Sequence[SampleTable]) -> SampleTable:
        """The ranks' values in rank order: the whole's, since ranks hold consecutive shards."""
        out = cls(parts[0].data.shape[1], 0)
        out._append(torch.cat([p.data[..., : p.filled] for p in parts], dim=-1))
        return out


def _by_layer(found: list[T], layers: int) -> list[tuple[T, T | None, T, T]]:
    """The table's rows (‖h‖, ‖g‖, ‖g‖/‖e‖, growth, a layer each) as each layer's (‖h‖, growth,
    ‖g‖, ‖g‖/‖e‖); the last layer has no growth."""
    h, g, rel, growth = (found[k * layers : (k + 1) * layers] for k in range(4))
    return [(h[i], growth[i] if i + 1 < layers else None, g[i], rel[i]) for i in range(layers)]


@dataclass
class CosineSums:
    """Sums of per-sample cosines and of their squares (per draw) and the count of rows that entered them;
    for K ≥ 2 draws added at once, also each row's squared deviations about its own mean over the draws."""

    total: Tensor
    squares: Tensor
    count: Tensor
    excluded: int = 0
    within: float = 0.0
    """Σ_i Σ_k (c_ki − c̄_i)²: how much one row's cosine varies from draw to draw."""
    within_dof: float = 0.0
    """Σ_i (K_i − 1), K_i the draws that defined row i's cosine."""

    @classmethod
    def empty(cls, draws: int) -> CosineSums:
        total, squares, count = (torch.zeros(draws, dtype=torch.float64) for _ in range(3))
        return cls(total, squares, count)

    def add(self, dot: Tensor, cc: Tensor, gg: Tensor) -> None:
        """Row-wise [K, n] dot and |c|^2 against |g|^2 ([n] or [K, n])."""
        cos = cosines(dot, cc, gg)
        missing = cos.isnan().sum(-1).cpu()
        self.total += torch.nansum(cos, -1).cpu()
        self.squares += torch.nansum(cos * cos, -1).cpu()
        self.count += cos.shape[-1] - missing
        self.excluded += int(missing[0])
        if cos.dim() == 2 and cos.shape[0] > 1:
            draws = (~cos.isnan()).sum(0)
            row_sums = torch.nansum(cos, 0)
            deviations = torch.nansum(cos * cos, 0) - row_sums * row_sums / draws.clamp(min=1)
            self.within += float(deviations.sum())
            self.within_dof += float((draws - 1).clamp(min=0).sum())

    @staticmethod
    def add_each(sinks: Sequence[CosineSums], dot: Tensor, cc: Tensor, gg: Tensor) -> None:
        """Row-wise [L, n] terms of one draw for L sums, a row each: one reduction for all of them."""
        cos = cosines(dot, cc, gg)
        missing = cos.isnan().sum(-1)
        sums = torch.nansum(torch.stack([cos, cos * cos]), -1).cpu()  # [2, L]
        for sink, total, square, gone in zip(sinks, *sums.unbind(), missing.tolist(), strict=True):
            sink.total += total
            sink.squares += square
            sink.count += cos.shape[-1] - gone
            sink.excluded += gone

    def means(self) -> Tensor:
        return torch.where(self.count > 0, self.total / self.count.clamp(min=1), float("nan"))

    def standard_errors(self) -> Tensor:
        """Each mean's standard error over its rows: the cosines' standard deviation (n − 1 in the
        denominator) over √n; NaN below two rows. From summed squares the variance is off by a few
        1e-16 at most (cosines are at most 1 in size), so the error by about 1e-8 / √n: nothing
        printed moves, even where the cosines barely vary (every row 1 gives 0)."""
        n = self.count.clamp(min=2)
        variance = ((self.squares - self.total * self.total / n) / (n - 1)).clamp(min=0)
        return torch.where(self.count >= 2, (variance / n).sqrt(), float("nan"))

    @classmethod
    def merged(cls, parts: Sequence[CosineSums]) -> CosineSums:
        total, squares, count = (
            torch.stack([getattr(p, k) for p in parts]).sum(0) for k in ("total", "squares", "count")
        )
        within, dof = (math.fsum(getattr(p, k) for p in parts) for k in ("within", "within_dof"))
        return cls(total, squares, count, sum(p.excluded for p in parts), within, dof)

    def carried_std(self, std: float, rows: float) -> float:
        """σ of the mean over ``rows`` rows, from ``std``, the spread of these draws' means over the
        rows they hold (n of them; docs/measurements.md, "The null on a subsample"). Over n rows
        Var = v̄/n + (1 − 1/n) ρ̄ (v̄ a row's variance over draws, ρ̄ two rows' covariance, on average),
        so σ²_N = v̄/N + (1 − 1/N) ρ̄ with v̄ from the rows' own spread over the draws; a negative
        estimate of ρ̄ is taken as 0, the wider end."""
        held = float(self.count.mean())
        if held >= rows or held < 2 or self.within_dof <= 0:
            return std
        row_variance = self.within / self.within_dof
        pairs = max((std * std - row_variance / held) / (1.0 - 1.0 / held), 0.0)
        return math.sqrt(row_variance / rows + (1.0 - 1.0 / rows) * pairs)


class CosineSummary(NamedTuple):
    """A layer's Γ and its null band (None where refused or undefined)."""

    cos: float | None = None
    null_mean: float | None = None
    null_std: float | None = None
    z: float | None = None
    null_draws: int | None = None
    null_std_range: tuple[float, float] | None = None
    """Where the null is in closed form: the least and greatest σ its bound allows."""
    null_std_sample: float | None = None
    """Where drawn on fewer rows than Γ's: the draws' spread on those rows, before it is carried to Γ's."""


@dataclass(frozen=True)
class Magnitudes:
    """What takes a batch's unit-error quantities back to their true size: each sample's scale
    s (e = s · ê, g = s · ĝ; :mod:`.loss_head`) and ‖ê‖."""

    scale: Tensor
    error_norm: Tensor
    credit_scales: bool
    """Whether the method's credit is linear in e (not DRTP's, which projects the target)."""

    def true_terms(self, dot: Tensor, cc: Tensor, gg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """<c, g>, |c|² and |g|² of one batch's rows at their true size (float64; a row that
        small underflows to 0 and so weighs nothing in a magnitude-weighted aggregation, as it should)."""
        s = self.scale
        c = s if self.credit_scales else torch.ones_like(s)
        return dot * c * s, cc * c * c, gg * s * s


@dataclass
class LayerAccumulator:
    """One layer's sums (its per-sample values for the medians are a row of the pass's :class:`SampleTable`)."""

    dir_batch: int
    draws: int
    first_minibatch: int = 0
    """The index in the whole eval set of this rank's first dir_stab minibatch."""
    cos: CosineSums = field(init=False)
    null: CosineSums = field(init=False)
    more_null: list[Tensor] = field(default_factory=list)
    """Null-draw means added after the pass, where the decision was not settled."""
    closed: ClosedNull | None = None
    """The null in closed form, where the method's credit allows it (then nothing is drawn)."""
    independent_width: int | None = None
    """The layer's width where the null's credit is an independent Gaussian direction per sample
    (:attr:`~fa_audit.methods.CreditMethod.independent_null`): exact, nothing is drawn."""
    direction: DirectionStability = field(init=False)
    refused: str | None = None

    def __post_init__(self) -> None:
        self.cos = CosineSums.empty(1)
        self.null = CosineSums.empty(self.draws)
        self.direction = DirectionStability(self.dir_batch, self.first_minibatch)

    @classmethod
    def merged(cls, parts: Sequence[LayerAccumulator]) -> LayerAccumulator:
        """One layer's accumulators of every rank, as one process would have them; the
        refusal is the first rank's (it rests on the feedback, the same on every rank)."""
        first = parts[0]
        out = cls(first.dir_batch, first.draws, refused=first.refused, independent_width=first.independent_width)
        out.cos = CosineSums.merged([p.cos for p in parts])
        out.null = CosineSums.merged([p.null for p in parts])
        closed = [p.closed for p in parts if p.closed is not None]
        out.closed = ClosedNull.merged(closed) if closed else None
        out.direction = DirectionStability.merged([p.direction for p in parts])
        return out

    def cos_se(self) -> float | None:
        """Γ's standard error over the eval samples (None where Γ is refused or undefined)."""
        return None if self.refused is not None else _standard_error(self.cos)

    def cosine_summary(self) -> CosineSummary:
        if self.refused is not None:
            return CosineSummary()
        cos = float(self.cos.means()[0])
        if math.isnan(cos):
            return CosineSummary()
        if self.independent_width is not None:
            # cos_i = ⟨u_i, ĝ_i⟩ for u_i uniform on the sphere: mean 0 and E[cos_i²] = 1/D exactly, independent
            # across the N rows Γ is the mean of, so σ² = 1/(N·D) with no approximation
            sigma = 1.0 / math.sqrt(float(self.cos.count[0]) * self.independent_width)
            return CosineSummary(cos, 0.0, sigma, cos / sigma, None, (sigma, sigma))
        if self.closed is not None:
            spread = self.closed.spread()
            if spread is None or spread[0] <= 0:
                return CosineSummary(cos)
            return CosineSummary(cos, 0.0, spread[0], cos / spread[0], None, (spread[1], spread[2]))
        null = torch.cat([self.null.means(), *self.more_null])
        if null.isnan().any() or len(null) < 2:
            return CosineSummary(cos)
        null_mean, on_sample = float(null.mean()), float(null.std())
        null_std = self.null.carried_std(on_sample, float(self.cos.count[0]))
        z = (cos - null_mean) / null_std if null_std > 0 else None
        return CosineSummary(cos, null_mean, null_std, z, len(null), None, None if null_std == on_sample else on_sample)


def _mean_terms(means: Tensor) -> list[Tensor]:
    """The sum, the sum of squares and the count of NaNs of per-sample means, for a CosineSums."""
    return [torch.nansum(means), torch.nansum(means * means), means.isnan().sum().double()]


def _standard_error(sums: CosineSums) -> float | None:
    se = float(sums.standard_errors()[0])
    return None if math.isnan(se) else se


@dataclass
class AggregationSums:
    """The four aggregations of pitfall 5 (docs/pitfalls.md), over all non-refused layers."""

    layers: int
    dot: float = 0.0
    cc: float = 0.0
    gg: float = 0.0
    batch_cosines: list[float] = field(default_factory=list)
    sample_sum: float = 0.0
    sample_count: int = 0
    layer_means: CosineSums = field(default_factory=lambda: CosineSums.empty(1))
    """Each sample's cosines averaged over the layers (where every layer's is defined), summed as Γ_l's
    are: the headline's standard error."""
    deep_means: CosineSums = field(default_factory=lambda: CosineSums.empty(1))
    """The same over the deep layers h1..hL alone: deep Γ's standard error."""

    def add_batch(self, dot: Tensor, cc: Tensor, gg: Tensor, deep: int) -> None:
        """Row-wise [L, n] dot and squared norms of every layer of one batch, the last ``deep`` rows
        those of h1..hL."""
        per_sample = cosines(dot.sum(0), cc.sum(0), gg.sum(0))
        each = cosines(dot, cc, gg)
        layered, deep_layered = each.mean(0), each[each.shape[0] - deep :].mean(0)
        # one transfer for every scalar of the batch (each float() of a tensor is a call and a sync)
        total_dot, total_cc, total_gg, sample_sum, missing, *means = torch.stack(
            [dot.sum(), cc.sum(), gg.sum(), torch.nansum(per_sample), per_sample.isnan().sum().double(),
             *_mean_terms(layered), *_mean_terms(deep_layered)]
        ).tolist()  # fmt: skip
        for sums, (total, squares, undefined) in ((self.layer_means, means[:3]), (self.deep_means, means[3:])):
            sums.total += total
            sums.squares += squares
            sums.count += layered.shape[0] - int(undefined)
        self.dot += total_dot
        self.cc += total_cc
        self.gg += total_gg
        denominator = math.sqrt(total_cc * total_gg)  # IEEE float64, as cosines() computes it
        if denominator > 0:
            self.batch_cosines.append(total_dot / denominator)
        self.sample_sum += sample_sum
        self.sample_count += per_sample.shape[0] - int(missing)

    @classmethod
    def merged(cls, parts: Sequence[AggregationSums]) -> AggregationSums:
        return cls(
            parts[0].layers,
            dot=math.fsum(p.dot for p in parts),
            cc=math.fsum(p.cc for p in parts),
            gg=math.fsum(p.gg for p in parts),
            batch_cosines=[c for p in parts for c in p.batch_cosines],
            sample_sum=math.fsum(p.sample_sum for p in parts),
            sample_count=sum(p.sample_count for p in parts),
            layer_means=CosineSums.merged([p.layer_means for p in parts]),
            deep_means=CosineSums.merged([p.deep_means for p in parts]),
        )

    def headline_se(self) -> float | None:
        """The headline's (the mean over layers of Γ_l) standard error over the eval samples: the
        standard deviation of each sample's cosines averaged over the layers, over √n. The layers'
        Γ_l rest on the same samples, so their errors are not independent; averaged per sample
        first, their covariance is in it. None below two samples."""
        return _standard_error(self.layer_means)

    def deep_se(self) -> float | None:
        """:meth:`headline_se` of deep Γ, the mean of Γ_l over h1..hL."""
        return _standard_error(self.deep_means)

    def strategies(self, layer_mean: float | None) -> dict[str, float | None]:
        flat = cosines(*(torch.tensor(v, dtype=torch.float64) for v in (self.dot, self.cc, self.gg)))
        return {
            "layer_mean": layer_mean,
            "flattened": None if flat.isnan() else float(flat),
            "batch_mean": sum(self.batch_cosines) / len(self.batch_cosines) if self.batch_cosines else None,
            "size_weighted": self.sample_sum / self.sample_count if self.sample_count else None,
        }
