"""Running per-layer statistics over a stream of batches: memory stays O(width)
per layer, plus one scalar per sample for the medians."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .functional import Tensor, cosines, median, pairwise_cosine_from_sum, reciprocals, row_norms
from .null_closed import ClosedNull


class DirectionStability:
    """dir_stab: mean pairwise cosine of u_k = normalize(mean of g/|g| over minibatch k),
    with minibatches of ``size`` consecutive samples (a trailing partial one is dropped).
    Only the running sum of the u_k is kept."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.partial: Tensor | None = None
        self.filled = 0
        self.total: Tensor | None = None
        self.count = 0

    def update(self, g: Tensor, norms: Tensor | None = None) -> None:
        """``norms``: g's row norms when already known."""
        g = g.reshape(g.shape[0], -1).double()  # a no-op for the audit's own float64 targets
        inverse = reciprocals(row_norms(g) if norms is None else norms)
        start = 0
        whole = (g.shape[0] // self.size) * self.size if self.filled == 0 else 0
        if whole:  # the batch's whole minibatches at once: one product, not one per minibatch
            # bmm, not einsum: the same product at a third of the call's cost
            sums = torch.bmm(inverse[:whole].view(-1, 1, self.size), g[:whole].view(-1, self.size, g.shape[1]))
            sums = sums.squeeze(1)
            self._close_minibatches(sums)
            start = whole
        while start < g.shape[0]:
            take = min(self.size - self.filled, g.shape[0] - start)
            chunk = inverse[start : start + take] @ g[start : start + take]  # the sum of the unit rows
            self.partial = chunk if self.partial is None else self.partial + chunk
            self.filled += take
            start += take
            if self.filled == self.size:
                self._close_minibatch(self.partial)
                self.partial, self.filled = None, 0

    def _close_minibatch(self, summed: Tensor) -> None:
        self._close_minibatches(summed.unsqueeze(0))

    def _close_minibatches(self, sums: Tensor) -> None:
        """Each row of ``sums`` (one minibatch's sum of unit rows) normalised into the running total;
        a zero sum (every row of the minibatch zero) is no direction and is left out (it stays a
        zero row, which adds nothing: no boolean indexing, a tenth of a small network's bookkeeping)."""
        norms = sums.norm(dim=1)
        kept = norms > 0
        units = (sums / torch.where(kept, norms, 1.0)[:, None]).sum(0).cpu()
        self.total = units if self.total is None else self.total + units
        self.count += int(kept.sum())

    @classmethod
    def merged(cls, parts: Sequence[DirectionStability]) -> DirectionStability:
        """The ranks' closed minibatches together; a rank's trailing partial one is dropped,
        as the whole's is (shards are cut at multiples of the minibatch size)."""
        out = cls(parts[0].size)
        totals = [p.total for p in parts if p.total is not None]
        out.total = torch.stack(totals).sum(0) if totals else None
        out.count = sum(p.count for p in parts)
        return out

    def result(self) -> float | None:
        if self.total is None or self.count < 2:
            return None
        return pairwise_cosine_from_sum(self.total, self.count)


class SampleValues:
    """One scalar per sample in a single preallocated float64 buffer (for the medians).

    Hundreds of small tensors kept across batches would pin glibc's heap between the
    large per-batch temporaries, and peak memory would then grow with the sample count.
    """

    def __init__(self, capacity: int) -> None:
        self.data = torch.empty(max(capacity, 1), dtype=torch.float64)
        self.filled = 0

    def add(self, values: Tensor) -> None:
        end = self.filled + values.shape[0]
        if end > self.data.shape[0]:
            self.data = torch.cat([self.data, torch.empty(max(end, 2 * self.data.shape[0]), dtype=torch.float64)])
        self.data[self.filled : end] = values
        self.filled = end

    def median(self) -> float | None:
        return median(self.data[: self.filled]) if self.filled else None

    @classmethod
    def merged(cls, parts: Sequence[SampleValues]) -> SampleValues:
        """The ranks' values in rank order: the whole's, since ranks hold consecutive shards."""
        out = cls(0)
        out.add(torch.cat([p.data[: p.filled] for p in parts]))
        return out


@dataclass
class CosineSums:
    """Sum of per-sample cosines (per draw) and the count of rows that entered it."""

    total: Tensor
    count: Tensor
    excluded: int = 0

    @classmethod
    def empty(cls, draws: int) -> CosineSums:
        return cls(torch.zeros(draws, dtype=torch.float64), torch.zeros(draws, dtype=torch.float64))

    def add(self, dot: Tensor, cc: Tensor, gg: Tensor) -> None:
        """Row-wise [K, n] dot and |c|^2 against |g|^2 ([n] or [K, n])."""
        cos = cosines(dot, cc, gg)
        missing = cos.isnan().sum(-1).cpu()
        self.total += torch.nansum(cos, -1).cpu()
        self.count += cos.shape[-1] - missing
        self.excluded += int(missing[0])

    def means(self) -> Tensor:
        return torch.where(self.count > 0, self.total / self.count.clamp(min=1), float("nan"))

    @classmethod
    def merged(cls, parts: Sequence[CosineSums]) -> CosineSums:
        total, count = torch.stack([p.total for p in parts]).sum(0), torch.stack([p.count for p in parts]).sum(0)
        return cls(total, count, sum(p.excluded for p in parts))


class CosineSummary(NamedTuple):
    """A layer's Γ and its null band (None where refused or undefined)."""

    cos: float | None = None
    null_mean: float | None = None
    null_std: float | None = None
    z: float | None = None
    null_draws: int | None = None
    null_std_range: tuple[float, float] | None = None
    """Where the null is in closed form: the least and greatest σ its bound allows."""


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
    capacity: int
    dir_batch: int
    draws: int
    h_norms: SampleValues = field(init=False)
    g_norms: SampleValues = field(init=False)
    g_rel: SampleValues = field(init=False)
    """‖g_l[i]‖ / ‖e_i‖: the gradient per unit of output error (reference validity's Mode 1 test)."""
    growth: SampleValues = field(init=False)
    cos: CosineSums = field(init=False)
    null: CosineSums = field(init=False)
    more_null: list[Tensor] = field(default_factory=list)
    """Null-draw means added after the pass, where the decision was not settled."""
    closed: ClosedNull | None = None
    """The null in closed form, where the method's credit allows it (then nothing is drawn)."""
    direction: DirectionStability = field(init=False)
    refused: str | None = None

    def __post_init__(self) -> None:
        self.h_norms, self.g_norms, self.g_rel, self.growth = (SampleValues(self.capacity) for _ in range(4))
        self.cos = CosineSums.empty(1)
        self.null = CosineSums.empty(self.draws)
        self.direction = DirectionStability(self.dir_batch)

    def add_states(
        self, h_norm: Tensor, g: Tensor, g_norm: Tensor, magnitudes: Magnitudes, h_next_norm: Tensor | None
    ) -> None:
        """Row norms of h_l, h_{l+1} and ĝ_l (unit-error space), and ĝ_l itself (flattened) for dir_stab."""
        self.h_norms.add(h_norm.cpu())
        self.g_norms.add((g_norm * magnitudes.scale).cpu())
        self.g_rel.add((g_norm / magnitudes.error_norm).cpu())
        if h_next_norm is not None:
            self.growth.add((h_next_norm / h_norm).cpu())
        self.direction.update(g, g_norm)

    @classmethod
    def merged(cls, parts: Sequence[LayerAccumulator]) -> LayerAccumulator:
        """One layer's accumulators of every rank, as one process would have them; the
        refusal is the first rank's (it rests on the feedback, the same on every rank)."""
        first = parts[0]
        out = cls(0, first.dir_batch, first.draws, refused=first.refused)
        out.h_norms, out.g_norms, out.g_rel, out.growth = (
            SampleValues.merged([getattr(p, name) for p in parts]) for name in ("h_norms", "g_norms", "g_rel", "growth")
        )
        out.cos = CosineSums.merged([p.cos for p in parts])
        out.null = CosineSums.merged([p.null for p in parts])
        closed = [p.closed for p in parts if p.closed is not None]
        out.closed = ClosedNull.merged(closed) if closed else None
        out.direction = DirectionStability.merged([p.direction for p in parts])
        return out

    def medians(self) -> tuple[float, float | None, float, float | None]:
        h_norm, g_norm = self.h_norms.median(), self.g_norms.median()
        assert h_norm is not None and g_norm is not None, "medians asked of a layer that saw no sample"
        return h_norm, self.growth.median(), g_norm, self.g_rel.median()

    def cosine_summary(self) -> CosineSummary:
        if self.refused is not None:
            return CosineSummary()
        cos = float(self.cos.means()[0])
        if math.isnan(cos):
            return CosineSummary()
        if self.closed is not None:
            spread = self.closed.spread()
            if spread is None or spread[0] <= 0:
                return CosineSummary(cos)
            return CosineSummary(cos, 0.0, spread[0], cos / spread[0], None, (spread[1], spread[2]))
        null = torch.cat([self.null.means(), *self.more_null])
        if null.isnan().any() or len(null) < 2:
            return CosineSummary(cos)
        null_mean, null_std = float(null.mean()), float(null.std())
        z = (cos - null_mean) / null_std if null_std > 0 else None
        return CosineSummary(cos, null_mean, null_std, z, len(null))


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

    def add_batch(self, dots: list[Tensor], ccs: list[Tensor], ggs: list[Tensor]) -> None:
        """Row-wise [n] dot and squared norms of every layer of one batch."""
        dot, cc, gg = torch.stack([*dots, *ccs, *ggs]).view(3, len(dots), -1)  # [L, n] each
        per_sample = cosines(dot.sum(0), cc.sum(0), gg.sum(0))
        # one transfer for every scalar of the batch (each float() of a tensor is a call and a sync)
        total_dot, total_cc, total_gg, sample_sum, missing = torch.stack(
            [dot.sum(), cc.sum(), gg.sum(), torch.nansum(per_sample), per_sample.isnan().sum().double()]
        ).tolist()
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
        )

    def strategies(self, layer_mean: float | None) -> dict[str, float | None]:
        flat = cosines(*(torch.tensor(v, dtype=torch.float64) for v in (self.dot, self.cc, self.gg)))
        return {
            "layer_mean": layer_mean,
            "flattened": None if flat.isnan() else float(flat),
            "batch_mean": sum(self.batch_cosines) / len(self.batch_cosines) if self.batch_cosines else None,
            "size_weighted": self.sample_sum / self.sample_count if self.sample_count else None,
        }
